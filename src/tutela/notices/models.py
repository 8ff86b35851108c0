"""The outbox: notices queued in the transaction that caused them, delivered afterwards.

A row names its recipient (an account, an employee, or the operator's security team when
both are empty) and carries its parameters sealed under the recipient's key: the address
is looked up only when the notice is delivered. A notice that speaks of a profile other
than its recipient's (a guardian told about their child) names that profile too, so
erasing the profile erases the notice and its mailed copy (A5, C6).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "account_id"], ["accounts.household_id", "accounts.id"]
        ),
        ForeignKeyConstraint(
            ["household_id", "about_profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        ForeignKeyConstraint(["staff_id"], ["staff_members.id"]),
        Index("ix_outbox_pending", "sent_at", "next_attempt_at"),
        Index("ix_outbox_household", "household_id"),
        Index("ix_outbox_about", "household_id", "about_profile_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    household_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    staff_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The profile the notice is about, when it is not the recipient's own (an inactive
    # child's guardian is told the child's name): erased with that profile.
    about_profile_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    params_sealed: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(80))
