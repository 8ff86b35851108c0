"""Verifiable parental consent (C3, C4, C7): a guardian proves they are an adult who may
consent for a child by one of the methods of 16 CFR 312.5(b)(2), and their grants of the
purposes they chose then rest on that verification.

Every attempt is recorded, the failed ones too (`verified=False`), with its method and its
evidence sealed under the child's profile key, so the evidence dies with the child's
profile. Evidence never holds a secret: no card number, no answer to a question, no image
of an ID (that image is erased right after the check through the one deletion path, and
the evidence keeps the erasure request whose receipt proves it). Failed attempts per child
are limited per day. Disclosure to third parties is never granted in this step (C4): it
is a separate grant afterwards, through the ordinary consent API.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.consent import questions
from tutela.consent.idcheck import IdChecker
from tutela.consent.ledger import ConsentLedger, Decision, Subject
from tutela.consent.models import PARENTAL_METHODS, Channel, Method, ParentalConsent
from tutela.consent.payments import AUTHORISATION_CENTS, PaymentProvider
from tutela.consent.service import Whose, whose
from tutela.core.errors import Conflict, Forbidden, InvalidInput, TooManyAttempts
from tutela.core.ids import uuid7
from tutela.erasure.engine import ErasureEngine
from tutela.erasure.intake import Hold
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.identity.service import Principal
from tutela.retention import contacts
from tutela.vault import crypto
from tutela.vault.documents import store_document
from tutela.vault.service import Vault

FAILURE_WINDOW = timedelta(days=1)
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


@dataclass(frozen=True)
class Outcome:
    consent_id: uuid.UUID
    method: str
    at: datetime
    state: dict[str, Decision]


@dataclass(frozen=True)
class _Verdict:
    verified: bool
    evidence: dict[str, Any]
    reason: str = ""


def evidence_aad(household_id: uuid.UUID, consent_id: uuid.UUID) -> bytes:
    return b"tutela:parental-evidence:" + household_id.bytes + consent_id.bytes


def open_evidence(vault: Vault, consent: ParentalConsent) -> dict[str, Any]:
    """The evidence of one attempt (KeyUnavailable once the child's profile is erased)."""
    if consent.evidence_sealed is None:
        return {}
    key = vault.keys.profile_key(
        household_id=consent.household_id, profile_id=consent.child_profile_id
    )
    data = json.loads(
        crypto.open_sealed(
            key, consent.evidence_sealed, aad=evidence_aad(consent.household_id, consent.id)
        )
    )
    assert isinstance(data, dict)
    return data


def guardian_of_child(session: Session, principal: Principal, child_id: uuid.UUID) -> Whose:
    """The child whose guardian the signed-in account is. Another household's profile, or
    a child the account is no guardian of, is not found; an adult's own profile is no
    child (422)."""
    who = whose(session, principal, child_id)
    if not who.subject.is_child or who.guardian_account_id is None:
        raise InvalidInput(
            "Parental consent is given for a child's profile.", code="not_a_child_profile"
        )
    return who


def check_purposes(ledger: ConsentLedger, attempt: Attempt) -> None:
    """What may rest on a verification: known purposes, none asked for separately (C4),
    under the notice the guardian was shown (C3). Refused before anything is verified."""
    if not attempt.purposes:
        raise InvalidInput("Choose at least one purpose.", code="no_purposes")
    for name in attempt.purposes:
        if ledger.purpose(name).separate:
            raise InvalidInput(
                "Sharing with other companies is asked for on its own, after parental "
                "consent, never in the same step (C4).",
                code="consent_bundled",
            )
    if attempt.notice_version != ledger.catalogue.notice_version:
        raise Conflict(
            "The consent notice has changed since it was shown; show the current one.",
            code="notice_changed",
            notice_version=ledger.catalogue.notice_version,
        )
    if attempt.method not in PARENTAL_METHODS:
        raise InvalidInput("That is not a way to verify a parent.", code="invalid_method")


def _failures(session: Session, subject: Subject, now: datetime) -> tuple[int, datetime | None]:
    row = session.execute(
        select(func.count(), func.min(ParentalConsent.at)).where(
            ParentalConsent.household_id == subject.household_id,
            ParentalConsent.child_profile_id == subject.profile_id,
            ParentalConsent.verified.is_(False),
            ParentalConsent.at > now - FAILURE_WINDOW,
        )
    ).one()
    return int(row[0] or 0), row[1]


def check_throttle(session: Session, subject: Subject, limit: int, now: datetime) -> int:
    """Refuse once a child's profile has had `limit` failed attempts in a day (429);
    answers how many are left."""
    failed, oldest = _failures(session, subject, now)
    if failed >= limit:
        wait = (oldest + FAILURE_WINDOW - now) if oldest is not None else FAILURE_WINDOW
        raise TooManyAttempts(
            "Too many failed attempts to verify a parent for this child today; try later.",
            code="parental_consent_attempts",
            retry_after=max(1, int(wait.total_seconds())),
        )
    return limit - failed


# --- the methods ---------------------------------------------------------------------


def _signed_form(attempt: Attempt, now: datetime) -> _Verdict:
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
        return _Verdict(False, evidence, "not_a_form")
    if signed > now.date() or now.date() - signed > FORM_MAX_AGE:
        return _Verdict(False, evidence, "signed_date_out_of_range")
    return _Verdict(True, evidence)


def _card(verifiers: Verifiers, attempt: Attempt) -> _Verdict:
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
    return _Verdict(check.ok, evidence, "" if check.ok else result)


def _questions(
    verifiers: Verifiers, principal: Principal, who: Whose, attempt: Attempt, now: datetime
) -> _Verdict:
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
    return _Verdict(answered.passed, evidence, "" if answered.passed else "wrong_answers")


def _id_check(
    session: Session, verifiers: Verifiers, principal: Principal, attempt: Attempt, now: datetime
) -> _Verdict:
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
    return _Verdict(check.ok, evidence, "" if check.ok else result)


# --- the use case --------------------------------------------------------------------


def _verify(
    session: Session,
    verifiers: Verifiers,
    principal: Principal,
    who: Whose,
    attempt: Attempt,
    now: datetime,
) -> _Verdict:
    if attempt.method is Method.SIGNED_FORM:
        return _signed_form(attempt, now)
    if attempt.method is Method.CARD_CHECK:
        return _card(verifiers, attempt)
    if attempt.method is Method.KNOWLEDGE_QUESTIONS:
        return _questions(verifiers, principal, who, attempt, now)
    return _id_check(session, verifiers, principal, attempt, now)


def give_consent(
    session: Session,
    verifiers: Verifiers,
    principal: Principal,
    child_id: uuid.UUID,
    attempt: Attempt,
    *,
    now: datetime,
) -> Outcome:
    """Verify the guardian by `attempt.method`, record the attempt with its evidence, and
    on success append the guardian's grants of `attempt.purposes` resting on it (C3); the
    child's open asks for consent are answered (C5). A failed attempt is recorded and
    answered 403 `parental_consent_not_verified`. The caller checked step-up (C7)."""
    who = guardian_of_child(session, principal, child_id)
    check_purposes(verifiers.ledger, attempt)
    left = check_throttle(session, who.subject, verifiers.failures_per_day, now)
    verdict = _verify(session, verifiers, principal, who, attempt, now)
    subject = who.subject
    consent_id = uuid7()
    key = verifiers.vault.keys.profile_key(
        household_id=subject.household_id, profile_id=subject.profile_id
    )
    session.add(
        ParentalConsent(
            household_id=subject.household_id,
            id=consent_id,
            child_profile_id=subject.profile_id,
            guardian_account_id=principal.account_id,
            method=attempt.method.value,
            verified=verdict.verified,
            notice_version=attempt.notice_version,
            at=now,
            evidence_sealed=crypto.seal(
                key,
                json.dumps(verdict.evidence, sort_keys=True).encode(),
                aad=evidence_aad(subject.household_id, consent_id),
            ),
        )
    )
    actor = f"account:{principal.account_id}"
    record(
        session,
        tag=(
            AuditTag.PARENTAL_CONSENT_VERIFIED
            if verdict.verified
            else AuditTag.PARENTAL_CONSENT_FAILED
        ),
        actor=actor,
        now=now,
        household_id=subject.household_id,
        subject=f"profile:{subject.profile_id}:{attempt.method.value}",
    )
    if not verdict.verified:
        session.commit()
        raise Forbidden(
            "The parent could not be verified that way.",
            code="parental_consent_not_verified",
            reason=verdict.reason,
            attempts_left=left - 1,
        )
    session.flush()
    done = verifiers.ledger.record(
        session,
        subject,
        dict.fromkeys(attempt.purposes, True),
        actor=actor,
        channel=Channel.API,
        method=attempt.method,
        notice_version=attempt.notice_version,
        now=now,
        guardian_account_id=principal.account_id,
    )
    for change in done:
        record(
            session,
            tag=AuditTag.CONSENT_GRANTED,
            actor=actor,
            now=now,
            household_id=subject.household_id,
            subject=f"profile:{subject.profile_id}:{change.purpose}",
        )
    contacts.mark_consented(
        session, household_id=subject.household_id, child_profile_id=subject.profile_id, now=now
    )
    session.commit()
    return Outcome(
        consent_id, attempt.method.value, now, verifiers.ledger.state(session, subject, now)
    )


def attempts_of(session: Session, subject: Subject) -> list[ParentalConsent]:
    """Every verification attempt for a child, newest first (no evidence opened)."""
    return list(
        session.scalars(
            select(ParentalConsent)
            .where(
                ParentalConsent.household_id == subject.household_id,
                ParentalConsent.child_profile_id == subject.profile_id,
            )
            .order_by(ParentalConsent.at.desc(), ParentalConsent.id.desc())
        )
    )
