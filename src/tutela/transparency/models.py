"""Tables of access transparency: each employee access to a customer's media, as the
customer is shown it, and each published version of the staff-access notice (R3, R9)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import UTCDateTime
from tutela.db.base import Base


class StaffMediaAccess(Base):
    """One look by an employee at one profile's media, as its household is told (R3, R9).

    The data contract the access-control part fills: one row in the same transaction as
    the decision, its audit entry and the read (no record, no read). Keyed by household
    like every personal table, so a household's erasure and a profile's erasure delete
    its rows. `staff_id` is the operator's reference and is never shown to a customer;
    customers see the role and `staff_pseudonym`, a keyed digest of the employee within
    the household (`transparency.rules.pseudonym`). `item_id` is null for a look at the
    profile's list of items (`target` "profile"), and becomes null when the item is
    erased (`target` stays "item"): the record of the look stays, nothing of the item.
    """

    __tablename__ = "staff_media_accesses"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        Index("ix_staff_media_accesses_profile_time", "household_id", "profile_id", "accessed_at"),
        Index("ix_staff_media_accesses_item", "household_id", "item_id"),
        # Pruning records past their retention (oldest first, across households).
        Index("ix_staff_media_accesses_time", "accessed_at"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    target: Mapped[str] = mapped_column(String(8))  # "item" or "profile"
    item_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    staff_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("staff_members.id"))
    staff_role: Mapped[str] = mapped_column(String(32))
    staff_pseudonym: Mapped[str] = mapped_column(String(8))
    purpose: Mapped[str] = mapped_column(String(32))
    ticket: Mapped[str | None] = mapped_column(String(64))
    policy_id: Mapped[str] = mapped_column(String(128))
    decision_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The moment of the decision: the record commits with it and with the read.
    accessed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffAccessNotice(Base):
    """A published version of the staff-access notice, kept as it was published (R9).

    Written once per version of the policy file, never updated: the digest of the
    policy it came from, its structured document (JSON) and its HTML.
    """

    __tablename__ = "staff_access_notices"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    policy_sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    document: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
