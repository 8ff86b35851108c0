"""Tables of the identity part: password hashes and server-side sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKeyConstraint, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class SessionKind(StrEnum):
    COOKIE = "cookie"
    API = "api"


class PasswordCredential(Base):
    """An account's argon2id password hash (NIST SP 800-63B, S3)."""

    __tablename__ = "passwords"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "account_id"], ["accounts.household_id", "accounts.id"]
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    hash: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SignInSession(Base):
    """A server-side, revocable session: the console's cookie or an API bearer token.

    Only a SHA-256 of the token is stored, so a copy of the table signs nobody in.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "account_id"], ["accounts.household_id", "accounts.id"]
        ),
        Index("ix_sessions_token_hash", "token_hash", unique=True),
        Index("ix_sessions_household_account", "household_id", "account_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The signing-in device's address and user agent are personal data: sealed under the
    # account holder's profile key, bound to this session's id.
    client_sealed: Mapped[bytes] = mapped_column(Binary)
