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

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.consent import announce
from tutela.consent.ledger import ConsentLedger, Decision, Subject
from tutela.consent.methods import Attempt, Verifiers, verify
from tutela.consent.models import PARENTAL_METHODS, Channel, ParentalConsent
from tutela.consent.service import Whose, whose
from tutela.core.errors import Conflict, Forbidden, InvalidInput, TooManyAttempts
from tutela.core.ids import uuid7
from tutela.identity.service import Principal
from tutela.retention import contacts
from tutela.vault import crypto
from tutela.vault.service import Vault

__all__ = ["Attempt", "Outcome", "Verifiers", "attempts_of", "give_consent", "open_evidence"]

FAILURE_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    consent_id: uuid.UUID
    method: str
    at: datetime
    state: dict[str, Decision]


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


# --- the use case --------------------------------------------------------------------


def give_consent(
    session: Session,
    verifiers: Verifiers,
    principal: Principal,
    child_id: uuid.UUID,
    attempt: Attempt,
    *,
    now: datetime,
    channel: Channel = Channel.API,
) -> Outcome:
    """Verify the guardian by `attempt.method`, record the attempt with its evidence, and
    on success append the guardian's grants of `attempt.purposes` resting on it (C3); the
    child's open asks for consent are answered (C5). A failed attempt is recorded and
    answered 403 `parental_consent_not_verified`. Each guardian is told of the grants
    (C6); the caller delivers the notices after answering. The caller checked step-up
    (C7); `channel` says where the grants came from (the API, or the console's page)."""
    who = guardian_of_child(session, principal, child_id)
    check_purposes(verifiers.ledger, attempt)
    left = check_throttle(session, who.subject, verifiers.failures_per_day, now)
    verdict = verify(session, verifiers, principal, who, attempt, now)
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
        channel=channel,
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
    # Each guardian hears of the grants, as of any change of a child's consent (C6).
    announce.tell(
        session,
        verifiers.vault.keys,
        verifiers.ledger.catalogue,
        subject=subject,
        principal=principal,
        changes=done,
        refused=False,
        notice_version=attempt.notice_version,
        origin=verifiers.origin,
        now=now,
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
