"""Asking a parent by email for consent for a child (C3, C5).

A guardian of the child names the other parent's address. Tutela keeps it only for this
(`retention.contacts`, sealed under the child's key), mails the parent a link to give
consent, and forgets it: wiped once a guardian's consent is verified, deleted by the
retention sweep if none comes in time.
Asks are limited per child and day, so the form cannot be used to mail strangers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import InvalidInput, NotFound, TooManyAttempts
from tutela.households import service as households
from tutela.households.models import Profile, ProfileKind, ProfileState
from tutela.households.rules import check_email
from tutela.identity.service import Principal
from tutela.notices.service import NoticeKind, enqueue_to_contact
from tutela.retention import contacts
from tutela.vault.keystore import KeyStore

ASK_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Asked:
    contact_id: uuid.UUID
    expires_at: datetime


def ask_parent(
    session: Session,
    keys: KeyStore,
    principal: Principal,
    child_id: uuid.UUID,
    *,
    email: str,
    origin: str,
    max_age: timedelta,
    asks_per_day: int,
    now: datetime,
) -> Asked:
    """Keep `email` to ask for consent for the child, and queue the email (one commit)."""
    # Only a guardian acts for a child (C6): any other profile, a child of this household
    # the account is no guardian of included, is not found, as a missing id is.
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    profile = session.get(Profile, (principal.household_id, child_id))
    if child_id not in visible or profile is None or profile.state != ProfileState.ACTIVE:
        raise NotFound("No such profile.", code="not_found")
    if profile.kind != ProfileKind.CHILD:
        raise InvalidInput(
            "Parental consent is asked for a child's profile.", code="not_a_child_profile"
        )
    address = check_email(email)
    asked = contacts.asks_since(
        session,
        household_id=profile.household_id,
        child_profile_id=profile.id,
        since=now - ASK_WINDOW,
    )
    if asked >= asks_per_day:
        raise TooManyAttempts(
            "A parent has been asked for this child often enough today; try tomorrow.",
            code="consent_asks_exhausted",
            retry_after=int(ASK_WINDOW.total_seconds()),
        )
    contact = contacts.hold_contact(
        session,
        keys,
        household_id=profile.household_id,
        child_profile_id=profile.id,
        address=address,
        now=now,
    )
    enqueue_to_contact(
        session,
        keys,
        kind=NoticeKind.PARENTAL_CONSENT_ASK,
        household_id=profile.household_id,
        child_profile_id=profile.id,
        address=address,
        params={"at": now.isoformat(), "link": f"{origin}/privacy/{profile.id}/consent"},
        now=now,
    )
    record(
        session,
        tag=AuditTag.PARENTAL_CONSENT_ASKED,
        actor=f"account:{principal.account_id}",
        now=now,
        household_id=profile.household_id,
        subject=f"profile:{profile.id}",
    )
    session.commit()
    return Asked(contact.id, contacts.expires_at(contact, max_age))
