"""Contact details kept only to ask a parent for consent (C5): held sealed, marked when
consent comes, deleted by the sweep (`sweep.consent_contacts`) when it does not.

Each contact is sealed under the key of the child it asks about, bound to its row, so
erasing the child's profile makes it unreadable at once and removes the row with the
child's rows; the sweep deletes an unanswered one after the policy's limit.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tutela.core.ids import uuid7
from tutela.retention.models import ConsentContact
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore


def _aad(household_id: uuid.UUID, contact_id: uuid.UUID) -> bytes:
    return b"tutela:consent-contact:" + household_id.bytes + contact_id.bytes


def hold_contact(
    session: Session,
    keys: KeyStore,
    *,
    household_id: uuid.UUID,
    child_profile_id: uuid.UUID,
    address: str,
    now: datetime,
) -> ConsentContact:
    """Keep a parent's address to ask for consent for a child; the caller commits."""
    contact_id = uuid7()
    key = keys.profile_key(household_id=household_id, profile_id=child_profile_id)
    contact = ConsentContact(
        id=contact_id,
        household_id=household_id,
        child_profile_id=child_profile_id,
        contact_sealed=crypto.seal(key, address.encode(), aad=_aad(household_id, contact_id)),
        created_at=now,
        consented_at=None,
    )
    session.add(contact)
    return contact


def contact_address(keys: KeyStore, contact: ConsentContact) -> str:
    """The address a contact holds (KeyUnavailable once its child is erased)."""
    assert contact.household_id is not None and contact.child_profile_id is not None
    key = keys.profile_key(household_id=contact.household_id, profile_id=contact.child_profile_id)
    return crypto.open_sealed(
        key, contact.contact_sealed, aad=_aad(contact.household_id, contact.id)
    ).decode()


def asks_since(
    session: Session, *, household_id: uuid.UUID, child_profile_id: uuid.UUID, since: datetime
) -> int:
    """How many contacts were kept to ask about this child since `since` (a throttle)."""
    count = session.scalar(
        select(func.count())
        .select_from(ConsentContact)
        .where(
            ConsentContact.household_id == household_id,
            ConsentContact.child_profile_id == child_profile_id,
            ConsentContact.created_at >= since,
        )
    )
    return int(count or 0)


def mark_consented(
    session: Session, *, household_id: uuid.UUID, child_profile_id: uuid.UUID, now: datetime
) -> int:
    """A guardian's consent for the child was verified: its open asks are answered. The
    address has served its one purpose and is wiped; the row stays as the record that
    the ask was answered (the sweep leaves it; it goes with the child's profile). The
    caller commits."""
    done = session.execute(
        update(ConsentContact)
        .where(
            ConsentContact.household_id == household_id,
            ConsentContact.child_profile_id == child_profile_id,
            ConsentContact.consented_at.is_(None),
        )
        .values(consented_at=now, contact_sealed=b"")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def expires_at(contact: ConsentContact, max_age: timedelta) -> datetime:
    return contact.created_at + max_age
