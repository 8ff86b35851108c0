"""Use cases of consent for a signed-in customer: see it, change it, refuse everything.

An adult decides for their own profile; a child's guardian for the child (C6). Any
other profile, in this household or another, is not found. Each change is appended to
the ledger with an audit record in one transaction (C3), and with its notices: each
guardian of a child hears of every change and refusal, an adult's own change is
confirmed (C6, `consent.announce`). Turning on a purpose that is off by default (review,
training, sharing, or an operator's own) needs a recent step-up (C7).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.consent import announce
from tutela.consent.ledger import Change, ConsentLedger, Decision, Subject
from tutela.consent.models import Channel, Method
from tutela.core.errors import NotFound
from tutela.households import service as households
from tutela.households.models import Profile, ProfileState
from tutela.identity.service import Principal
from tutela.vault.keystore import KeyStore


class StepUpGate(Protocol):
    """What `change` asks before a grant that widens use: `identity.Gate` answers it."""

    def require_step_up(self, session: Session, principal: Principal, *, now: datetime) -> None:
        """Raise `StepUpRequired` unless the session confirmed it is its owner lately."""


@dataclass(frozen=True)
class Whose:
    """A profile the signed-in account may decide for, and in which role."""

    subject: Subject
    guardian_account_id: uuid.UUID | None
    """Set when the profile is a child's and the account is its guardian."""


def whose(session: Session, principal: Principal, profile_id: uuid.UUID) -> Whose:
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    profile = session.get(Profile, (principal.household_id, profile_id))
    if profile_id not in visible or profile is None or profile.state != ProfileState.ACTIVE:
        raise NotFound("No such profile.", code="not_found")
    subject = Subject.of(profile)
    guardian = principal.account_id if subject.is_child else None
    return Whose(subject, guardian)


def actor_of(principal: Principal) -> str:
    return f"account:{principal.account_id}"


def _audit(session: Session, who: Whose, changes: list[Change], actor: str, now: datetime) -> None:
    for change in changes:
        record(
            session,
            tag=AuditTag.CONSENT_GRANTED if change.granted else AuditTag.CONSENT_WITHDRAWN,
            actor=actor,
            now=now,
            household_id=who.subject.household_id,
            subject=f"profile:{who.subject.profile_id}:{change.purpose}",
        )


def widens_use(ledger: ConsentLedger, purpose: str) -> bool:
    """Whether granting `purpose` turns on a use that is off until asked for (C4, C7).
    An unknown name is not one: the ledger refuses it."""
    return purpose in ledger.catalogue and not ledger.catalogue[purpose].adult_default


def change(
    session: Session,
    ledger: ConsentLedger,
    principal: Principal,
    profile_id: uuid.UUID,
    changes: Mapping[str, bool],
    *,
    notice_version: int,
    channel: Channel,
    now: datetime,
    keys: KeyStore,
    origin: str,
    gate: StepUpGate,
) -> dict[str, Decision]:
    """Grant or withdraw purposes; answers the profile's consent after the change. The
    notices (C6) are queued with it; the caller delivers them after answering.

    A grant of a purpose that is off by default for adults (`adult_default = false`:
    review, training, sharing) needs a step-up in the last few minutes, or a stolen
    session could start sharing a child's recordings (C7): `StepUpRequired`, and nothing
    is appended. Withdrawals, and grants of what is on by default, only narrow or keep
    today's use, and are taken without one.
    """
    who = whose(session, principal, profile_id)
    if any(granted and widens_use(ledger, name) for name, granted in changes.items()):
        gate.require_step_up(session, principal, now=now)
    actor = actor_of(principal)
    done = ledger.record(
        session,
        who.subject,
        changes,
        actor=actor,
        channel=channel,
        method=Method.CHECKBOX,
        notice_version=notice_version,
        now=now,
        guardian_account_id=who.guardian_account_id,
    )
    _audit(session, who, done, actor, now)
    announce.tell(
        session,
        keys,
        ledger.catalogue,
        subject=who.subject,
        principal=principal,
        changes=done,
        refused=False,
        notice_version=notice_version,
        origin=origin,
        now=now,
    )
    session.commit()
    return ledger.state(session, who.subject, now)


def refuse(
    session: Session,
    ledger: ConsentLedger,
    principal: Principal,
    profile_id: uuid.UUID,
    *,
    channel: Channel,
    now: datetime,
    keys: KeyStore,
    origin: str,
) -> dict[str, Decision]:
    """Refuse further collection and use (C6): every purpose withdrawn at once. The
    profile's devices are refused for it from the next upload on. Each guardian of a
    child is told (an adult, themselves) in the same transaction."""
    who = whose(session, principal, profile_id)
    actor = actor_of(principal)
    done = ledger.refuse_all(session, who.subject, actor=actor, channel=channel, now=now)
    record(
        session,
        tag=AuditTag.COLLECTION_REFUSED,
        actor=actor,
        now=now,
        household_id=who.subject.household_id,
        subject=f"profile:{who.subject.profile_id}",
    )
    announce.tell(
        session,
        keys,
        ledger.catalogue,
        subject=who.subject,
        principal=principal,
        changes=done,
        refused=True,
        notice_version=ledger.catalogue.notice_version,
        origin=origin,
        now=now,
    )
    session.commit()
    return ledger.state(session, who.subject, now)
