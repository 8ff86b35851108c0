"""Consent as an append-only ledger: who agreed to what, for whom, when and how (C2-C7).

Every other part learns consent through one question, `ConsentLedger.allows` (or
`allows_many` for a set of subjects); nothing reads the ledger's tables directly.
"""
