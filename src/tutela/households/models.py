"""Tables of the households part. Names, birth dates and emails are stored sealed.

Every table of personal data leads its primary key with `household_id`, so a
distribution layer can keep a household's rows on one shard (DESIGN.md, Scale).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class ProfileKind(StrEnum):
    ADULT = "adult"
    CHILD = "child"


class ProfileState(StrEnum):
    ACTIVE = "active"
    UNDER_ERASURE = "under_erasure"


class AccountRole(StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class DeviceKind(StrEnum):
    VOICE = "voice"
    CAMERA = "camera"
    PHONE = "phone"


class CameraZone(StrEnum):
    PORCH = "porch"
    GARDEN = "garden"
    DRIVEWAY = "driveway"
    GARAGE = "garage"
    HALLWAY = "hallway"
    LIVING_ROOM = "living_room"
    KITCHEN = "kitchen"
    PLAYROOM = "playroom"
    BEDROOM = "bedroom"
    NURSERY = "nursery"
    BATHROOM = "bathroom"


class Household(Base):
    __tablename__ = "households"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="active")


class Profile(Base):
    """A person recorded by the household's devices: an adult or a child."""

    __tablename__ = "profiles"

    household_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("households.id"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # Fixed when the profile is made: its items carry a copy (`items.subject_class`).
    kind: Mapped[str] = mapped_column(String(8))
    name_sealed: Mapped[bytes] = mapped_column(Binary)
    birth_date_sealed: Mapped[bytes | None] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default=ProfileState.ACTIVE)


class EmailIndexEpoch(Base):
    """The key epoch new email indexes are keyed under: one row. A sign-up holds it (FOR
    SHARE) until it commits, and an epoch rotation moves it (a write, which waits for those
    sign-ups) before it re-indexes the accounts and destroys the old epoch: so no account
    is ever left with an index under an epoch that is gone (S6), and two sign-ups of one
    address always see each other."""

    __tablename__ = "email_index_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    epoch_id: Mapped[str] = mapped_column(String(32))


class Account(Base):
    """A customer who signs in. The email is found through a keyed index, stored sealed."""

    __tablename__ = "accounts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("households.id"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    email_index: Mapped[bytes] = mapped_column(Binary, unique=True)
    # The key epoch (its number) whose derived key made `email_index` (None: the older
    # service key). Indexes move to each new epoch, so an index left in a backup or a dead
    # tuple stops confirming a guessed address once its epoch is destroyed (S6).
    email_index_epoch: Mapped[int | None] = mapped_column(Integer, index=True)
    email_sealed: Mapped[bytes] = mapped_column(Binary)
    role: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Guardianship(Base):
    """An account that is a guardian of a child profile (verifiable parental consent)."""

    __tablename__ = "guardianships"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "child_profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        ForeignKeyConstraint(
            ["household_id", "guardian_account_id"], ["accounts.household_id", "accounts.id"]
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    child_profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    guardian_account_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Device(Base):
    """A voice assistant, camera (with its zone) or phone. Its token is stored hashed."""

    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_token_hash", "token_hash", unique=True),)

    household_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("households.id"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    zone: Mapped[str | None] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
