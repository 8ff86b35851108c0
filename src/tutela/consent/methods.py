"""The four ways a guardian is verified as a parent (C3; 16 CFR 312.5(b)(2)), each
answering verified or not with the evidence to keep: never a secret (no card number or
token, no answer, no form, no ID photo). `consent.parental` records the attempt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tutela.consent import questions
from tutela.consent.idcheck import IdChecker
from tutela.consent.ledger import ConsentLedger
from tutela.consent.models import Method
from tutela.consent.payments import AUTHORISATION_CENTS, PaymentProvider
from tutela.consent.service import Whose
from tutela.core.errors import Conflict, InvalidInput
from tutela.erasure.engine import ErasureEngine
from tutela.erasure.intake import Hold
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.identity.service import Principal
from tutela.vault.documents import store_document
from tutela.vault.service import Vault

FORM_MAX_AGE = timedelta(days=30)
FORM_TYPES = {
    b"%PDF-": "application/pdf",
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
}


@dataclass(frozen=True)
class Attempt:
    """One verification as the guardian sent it; which fields count depends on `method`."""

    method: Method
    purposes: tuple[str, ...]
    notice_version: int
    document: bytes | None = None
    """The signed form (PDF, JPEG, PNG) or the photo of the ID (JPEG)."""
    document_type: str | None = None
    typed_name: str | None = None
    signed_on: date | None = None
    card_token: str | None = None
    challenge: str | None = None
    answers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verifiers:
    """The ports verification needs, from the container."""

    ledger: ConsentLedger
    vault: Vault
    erasure: ErasureEngine
    payments: Callable[[], PaymentProvider]
    ids: Callable[[], IdChecker]
    open_session: Callable[[], Session]
    hold: Hold | None
    failures_per_day: int
    question_count: int
    production: bool = False
    """In production the packaged question bank verifies nobody."""
    origin: str = ""
    """The console's public address, for the links of the guardians' notices (C6)."""


@dataclass(frozen=True)
class Verdict:
    verified: bool
    evidence: dict[str, Any]
    reason: str = ""


# --- the methods ---------------------------------------------------------------------


def _signed_form(attempt: Attempt, now: datetime) -> Verdict:
    """A consent form signed and sent back as a scan or photo (312.5(b)(2)(i)). Kept: the
    form's SHA-256, type and size, the name the guardian typed and the date they signed;
    not the form, whose copy the parent keeps (a later copy can be matched to the hash)."""
    body, name, signed = attempt.document, (attempt.typed_name or "").strip(), attempt.signed_on
    if not body or not name or signed is None:
        raise InvalidInput(
            "A signed form needs the file, the name typed as signed and the date.",
            code="form_incomplete",
        )
    media_type = next((t for magic, t in FORM_TYPES.items() if body.startswith(magic)), None)
    evidence: dict[str, Any] = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
        "media_type": media_type,
        "typed_name": name[:120],
        "signed_on": signed.isoformat(),
    }
    if media_type is None:
        return Verdict(False, evidence, "not_a_form")
    if signed > now.date() or now.date() - signed > FORM_MAX_AGE:
        return Verdict(False, evidence, "signed_date_out_of_range")
    return Verdict(True, evidence)


def _card(verifiers: Verifiers, attempt: Attempt) -> Verdict:
    """A card used in a monetary transaction (312.5(b)(2)(ii)): a zero-amount
    authorisation. Kept: the provider, its reference, the last four digits."""
    token = (attempt.card_token or "").strip()
    if not token or len(token) > 200:
        raise InvalidInput("A card check needs the card form's token.", code="card_token_missing")
    provider = verifiers.payments()
    check = provider.verify_card(token, AUTHORISATION_CENTS)
    result = "passed" if check.ok else check.reason or "declined"
    evidence = {
        "provider": provider.name,
        "reference": check.reference,
        "last4": check.last4,
        "amount_cents": AUTHORISATION_CENTS,
        "result": result,
    }
    return Verdict(check.ok, evidence, "" if check.ok else result)


def _questions(
    verifiers: Verifiers, principal: Principal, who: Whose, attempt: Attempt, now: datetime
) -> Verdict:
    """Knowledge-based questions (312.5(b)(2)(vi)): every one answered right. Kept: the
    question ids and how many were right, never the answers."""
    questions.require_bank(production=verifiers.production)
    if not attempt.challenge:
        raise InvalidInput("Answer the questions you were given.", code="questions_invalid")
    answered = questions.check(
        verifiers.vault.keys,
        challenge=attempt.challenge,
        answers=attempt.answers,
        child_profile_id=who.subject.profile_id,
        account_id=principal.account_id,
        now=now,
    )
    evidence = {
        "question_ids": list(answered.question_ids),
        "asked": len(answered.question_ids),
        "right": answered.right,
        "result": "passed" if answered.passed else "failed",
    }
    return Verdict(answered.passed, evidence, "" if answered.passed else "wrong_answers")


def _id_check(
    session: Session, verifiers: Verifiers, principal: Principal, attempt: Attempt, now: datetime
) -> Verdict:
    """A government ID checked against a database (312.5(b)(2)(v)), then erased at once.

    The photo is sealed as an item of the guardian's own profile (never the child's),
    checked, and erased through the one deletion path whatever the check said: the keys
    are destroyed before this returns, and the worker removes the blob and verifies that
    nothing is left before it signs the receipt. Kept: the checker, its reference, the
    result and the erasure request (whose receipt is the proof of deletion)."""
    image, media_type = attempt.document, (attempt.document_type or "").split(";")[0].strip()
    if not image:
        raise InvalidInput("An ID check needs a photo of the ID.", code="document_missing")
    checker = verifiers.ids()
    hold = verifiers.hold
    if hold is not None and hold(principal.household_id, principal.profile_id, now) is not None:
        # The one deletion path would refuse to erase the photo: it is never taken.
        raise Conflict(
            "A legal hold suspends deletion here, so an ID photo cannot be taken; use "
            "another way to verify.",
            code="legal_hold",
        )
    session.commit()  # the checks' read transaction ends before other sessions write
    with verifiers.open_session() as own:
        item = store_document(
            own,
            verifiers.vault,
            household_id=principal.household_id,
            profile_id=principal.profile_id,
            media_type=media_type,
            body=image,
            now=now,
        )
    try:
        check = checker.check_adult(image, media_type, today=now.date())
    finally:
        erasure = verifiers.erasure.start(
            Scope(
                ScopeKind.ITEM,
                principal.household_id,
                profile_id=principal.profile_id,
                item_id=item.id,
            ),
            Requester(RequesterKind.ADULT, f"account:{principal.account_id}"),
            hold=verifiers.hold,
        )
    result = "passed" if check.ok else check.reason or "failed"
    evidence = {
        "checker": checker.name,
        "reference": check.reference,
        "result": result,
        "image_erasure_request_id": str(erasure.id),
    }
    return Verdict(check.ok, evidence, "" if check.ok else result)


def verify(
    session: Session,
    verifiers: Verifiers,
    principal: Principal,
    who: Whose,
    attempt: Attempt,
    now: datetime,
) -> Verdict:
    if attempt.method is Method.SIGNED_FORM:
        return _signed_form(attempt, now)
    if attempt.method is Method.CARD_CHECK:
        return _card(verifiers, attempt)
    if attempt.method is Method.KNOWLEDGE_QUESTIONS:
        return _questions(verifiers, principal, who, attempt, now)
    return _id_check(session, verifiers, principal, attempt, now)
