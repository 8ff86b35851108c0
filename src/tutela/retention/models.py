"""Tables of retention: customers' automatic-deletion choices, the inactive-child rule's
state per profile, and contact data kept only to ask a parent for consent."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class AutoDeleteChoice(Base):
    """A customer's automatic deletion for one profile and kind (A6)."""

    __tablename__ = "auto_delete_choices"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    choice: Mapped[str] = mapped_column(String(8))
    set_by: Mapped[str] = mapped_column(String(80))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InactiveChild(Base):
    """The inactive-child rule's record for one child profile (A1-A3).

    Identified after the configured time without activity; the guardians are told; the
    profile is erased when `erase_after` passes, unless a guardian kept it (who, when,
    how) or it became active again.
    """

    __tablename__ = "inactive_children"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        Index("ix_inactive_children_due", "outcome", "erase_after"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    identified_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erase_after: Mapped[datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # pending, kept, reactivated, erasing
    outcome: Mapped[str] = mapped_column(String(16), default="pending")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kept_by: Mapped[str | None] = mapped_column(String(80))
    kept_how: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class ConsentContact(Base):
    """A parent's contact, kept only to ask for consent (C5); sealed, and it expires.

    Sealed under the key of the child it asks about (`child_profile_id`), so erasing the
    child's profile makes it unreadable at once and removes the row with the child's.
    """

    __tablename__ = "consent_contacts"
    __table_args__ = (
        Index("ix_consent_contacts_created", "consented_at", "created_at"),
        ForeignKeyConstraint(
            ["household_id", "child_profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        Index("ix_consent_contacts_child", "household_id", "child_profile_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    household_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    child_profile_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    contact_sealed: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
