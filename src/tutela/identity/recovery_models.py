"""The table of account recovery ("forgot password"): emailed links and delayed resets.

A row is one emailed link. Only SHA-256 hashes of its token and of the cancel token of a
delayed reset are kept, so a copy of the table recovers nobody's account (R6).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class RecoveryState(StrEnum):
    SENT = "sent"  # the link was emailed and not used yet
    USED = "used"  # its single use was spent on a second-factor step that failed too often
    EXPIRED = "expired"  # replaced by a newer link, or its time ran out unused
    DELAYED = "delayed"  # no second factor was presented: the reset waits (R5)
    CANCELLED = "cancelled"  # the owner cancelled the waiting reset
    COMPLETED = "completed"  # the password was reset


class AccountRecovery(Base):
    """One emailed recovery link of a customer account, and the reset it led to."""

    __tablename__ = "account_recoveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "account_id"], ["accounts.household_id", "accounts.id"]
        ),
        Index("ix_account_recoveries_account", "household_id", "account_id", "created_at"),
        Index("ix_account_recoveries_token_hash", "token_hash", unique=True),
        Index("ix_account_recoveries_cancel_hash", "cancel_hash", unique=True),
        Index("ix_account_recoveries_due", "state", "delay_until"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    token_hash: Mapped[bytes] = mapped_column(Binary)
    state: Mapped[str] = mapped_column(String(12), default=RecoveryState.SENT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Wrong second-factor answers given with this link: it dies after a few.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The WebAuthn challenge offered when the link was opened, if the owner has a passkey.
    webauthn_challenge: Mapped[bytes | None] = mapped_column(Binary)
    # A delayed reset: the new password's argon2id hash (like `passwords.hash`), when it
    # takes effect, and the hash of the token the notice carries to cancel it.
    new_password_hash: Mapped[str | None] = mapped_column(String(200))
    delay_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_hash: Mapped[bytes | None] = mapped_column(Binary)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
