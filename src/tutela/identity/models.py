"""Tables of the identity part: passwords, factors, sessions, challenges, staff, breaches.

A sign-in subject (an *owner*) is either a customer account (`household_id`,
`account_id`) or an employee (`staff_id`); tables that serve both carry the three
columns, exactly one side filled, enforced by a CHECK constraint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class SessionKind(StrEnum):
    COOKIE = "cookie"
    API = "api"


class SessionStage(StrEnum):
    """What a session may do: everything, or only the one thing standing in its way."""

    FULL = "full"
    ENROL = "enrol"  # an employee (or camera owner) must add a second factor first (R4, R5)
    CHANGE_PASSWORD = "change_password"  # noqa: S105 (a breached password must be changed, R7)


class FactorKind(StrEnum):
    TOTP = "totp"
    WEBAUTHN = "webauthn"


class ChallengePurpose(StrEnum):
    SECOND_FACTOR = "second_factor"
    EMAIL_LINK = "email_link"
    WEBAUTHN_REGISTER = "webauthn_register"
    # A passkey: a discoverable credential that verifies its user (usernameless sign-in).
    PASSKEY_REGISTER = "passkey_register"
    STEP_UP = "step_up"


_ONE_OWNER = "(account_id IS NULL) <> (staff_id IS NULL)"


def _owner_constraints(table: str) -> tuple[object, ...]:
    return (
        ForeignKeyConstraint(
            ["household_id", "account_id"],
            ["accounts.household_id", "accounts.id"],
        ),
        CheckConstraint(_ONE_OWNER, name="one_owner"),
        Index(f"ix_{table}_account", "household_id", "account_id"),
    )


class OwnerColumns:
    """The owner columns: a customer account or an employee, never both."""

    household_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    staff_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("staff_members.id"), index=True
    )


class StaffMember(Base):
    """An employee of the operator. MFA is mandatory; WebAuthn for media roles (R4)."""

    __tablename__ = "staff_members"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email_index: Mapped[bytes] = mapped_column(Binary, unique=True)
    # Sealed under the service key `staff`, bound to the member's id.
    email_sealed: Mapped[bytes] = mapped_column(Binary)
    roles: Mapped[str] = mapped_column(String(200))  # space-separated role names
    password_hash: Mapped[str] = mapped_column(String(200))
    password_updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_must_change: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
    # Set when the password was found in a breach at sign-in: only a change is allowed (R7).
    must_change: Mapped[bool] = mapped_column(Boolean, default=False)


class SignInSession(OwnerColumns, Base):
    """A server-side, revocable session: the console's cookie or an API bearer token.

    Only a SHA-256 of the token is stored, so a copy of the table signs nobody in.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        *_owner_constraints("sessions"),
        Index("ix_sessions_token_hash", "token_hash", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    stage: Mapped[str] = mapped_column(String(16), default=SessionStage.FULL)
    # When a second factor was last presented in this session (step-up, C7), and how
    # many step-ups failed in a row: the session ends after a few.
    stepped_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_step_ups: Mapped[int] = mapped_column(Integer, default=0)
    token_hash: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The signing-in device's address and user agent are personal data: sealed under the
    # account holder's profile key, bound to this session's id.
    client_sealed: Mapped[bytes] = mapped_column(Binary)


class Factor(OwnerColumns, Base):
    """A second factor: a TOTP secret (RFC 6238) or a WebAuthn credential."""

    __tablename__ = "factors"
    __table_args__ = (
        *_owner_constraints("factors"),
        Index("ix_factors_credential_id", "credential_id", unique=True),
        Index("ix_factors_user_handle", "user_handle"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # TOTP: the secret sealed under the owner's key; the last accepted time step.
    secret_sealed: Mapped[bytes | None] = mapped_column(Binary)
    last_step: Mapped[int] = mapped_column(BigInteger, default=-1)
    # WebAuthn: credential id, COSE public key, signature counter.
    credential_id: Mapped[bytes | None] = mapped_column(Binary)
    public_key: Mapped[bytes | None] = mapped_column(Binary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # WebAuthn: the user handle given to the authenticator (`user.id`), random and the
    # same for every credential of one owner, so a usernameless assertion names its
    # owner without revealing an account id. NULL for credentials registered with the
    # owner's id before handles existed.
    user_handle: Mapped[bytes | None] = mapped_column(Binary)


class RecoveryCode(OwnerColumns, Base):
    """A single-use recovery code, stored only as a keyed hash and burnt on use."""

    __tablename__ = "recovery_codes"
    __table_args__ = _owner_constraints("recovery_codes")

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    code_hash: Mapped[bytes] = mapped_column(Binary, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SignInChallenge(OwnerColumns, Base):
    """A sign-in waiting for its second factor or emailed link, or a WebAuthn ceremony.

    Single-use and short-lived; only a hash of its token is kept.
    """

    __tablename__ = "sign_in_challenges"
    __table_args__ = (
        *_owner_constraints("sign_in_challenges"),
        Index("ix_sign_in_challenges_token_hash", "token_hash", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(Binary)
    purpose: Mapped[str] = mapped_column(String(24))
    session_kind: Mapped[str] = mapped_column(String(8))
    # The session this sign-in will open must only change the password (R7).
    breached: Mapped[bool] = mapped_column(Boolean, default=False)
    # Opened by the emailed link (the mailbox was proved), not by a password.
    via_link: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    webauthn_challenge: Mapped[bytes | None] = mapped_column(Binary)
    # A registration ceremony: the user handle offered to the authenticator, kept for the
    # new credential.
    user_handle: Mapped[bytes | None] = mapped_column(Binary)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasskeyAudience(StrEnum):
    """Who may answer a usernameless passkey ceremony: a customer or an employee."""

    ACCOUNT = "account"
    STAFF = "staff"


class PasskeyCeremony(Base):
    """A usernameless passkey sign-in waiting for its assertion (W3C WebAuthn L2 §13.4.3).

    The challenge is the ceremony's only name: the browser signs it into clientDataJSON,
    so the answer finds its row without a username. `used_at` is claimed with one
    conditional UPDATE, which makes a challenge single-use across processes.
    """

    __tablename__ = "passkey_ceremonies"
    __table_args__ = (
        Index("ix_passkey_ceremonies_challenge", "challenge", unique=True),
        Index("ix_passkey_ceremonies_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    challenge: Mapped[bytes] = mapped_column(Binary)
    kind: Mapped[str] = mapped_column(String(8))  # PasskeyAudience
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KnownDevice(OwnerColumns, Base):
    """A browser or app that completed a sign-in: later sign-ins from it are not 'new'."""

    __tablename__ = "known_devices"
    __table_args__ = (
        *_owner_constraints("known_devices"),
        Index("ix_known_devices_token_hash", "token_hash", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Wrong passwords sent with this device's cookie: it is forgotten after a few, so a
    # stolen cookie is not a way around the account's limit (S2).
    failures: Mapped[int] = mapped_column(Integer, default=0)


class BreachedRange(Base):
    """The k-anonymity range store (S5): SHA-1 prefix (5 hex) -> suffix (35 hex) and count."""

    __tablename__ = "breached_ranges"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    prefix: Mapped[str] = mapped_column(String(5), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(35), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
