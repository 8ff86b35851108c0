"""The audit log: security-relevant events, appended in the transaction that caused them."""
