"""Tables of the vault: media items in the main store, keys in the key store."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base, KeyBase


class ItemKind(StrEnum):
    VOICE = "voice"
    VIDEO = "video"
    SNAPSHOT = "snapshot"
    LOCATION = "location"
    TRANSCRIPT = "transcript"
    THUMBNAIL = "thumbnail"


class ItemState(StrEnum):
    ACTIVE = "active"
    UNDER_ERASURE = "under_erasure"


class MediaItem(Base):
    """One recording, clip, snapshot, location batch or derived artifact.

    The row holds no plaintext personal content: media bytes are a sealed blob,
    transcripts are a sealed field, and `content_mac` is an HMAC under the item's own
    key, so it dies with the key.
    """

    __tablename__ = "items"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        ForeignKeyConstraint(["household_id", "device_id"], ["devices.household_id", "devices.id"]),
        ForeignKeyConstraint(
            ["household_id", "source_item_id"], ["items.household_id", "items.id"]
        ),
        Index("ix_items_household_profile_captured", "household_id", "profile_id", "captured_at"),
        Index("ix_items_household_captured", "household_id", "captured_at"),
        Index("ix_items_household_source", "household_id", "source_item_id"),
        # Retention sweeps find expired items by kind, subject class and age, oldest
        # first, keyset-paged on the last three columns (A6, C9); on a sharded store this
        # index is local to each shard like the others.
        Index("ix_items_retention", "kind", "subject_class", "captured_at", "household_id", "id"),
        # Ephemeral items (C11) are few and short-lived: the sweep finds the expired ones
        # through this partial index, which no other item enlarges.
        Index(
            "ix_items_ephemeral",
            "received_at",
            "household_id",
            "id",
            postgresql_where=text("ephemeral"),
            sqlite_where=text("ephemeral = 1"),  # as SQLAlchemy writes the test there
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    device_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    source_item_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(16))
    # The kind of the profile the item is about (adult, child): its copy, so the sweep
    # finds what the policy's (kind, subject) rules expire through one index. Set at
    # ingestion from the profile, which never changes kind.
    subject_class: Mapped[str] = mapped_column(String(8))
    media_type: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    size: Mapped[int] = mapped_column(BigInteger)
    content_mac: Mapped[bytes] = mapped_column(Binary)
    blob_key: Mapped[str | None] = mapped_column(String(200))
    sealed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    sealed_fields: Mapped[bytes | None] = mapped_column(Binary)
    state: Mapped[str] = mapped_column(String(16), default=ItemState.ACTIVE)
    # C11: a voice recording used only in place of typed words, or its transcript. The
    # recording's audio was never stored (no blob, no key, no fingerprint); the row and
    # its transcript are erased by the retention sweep after the policy's short
    # `[ephemeral_voice]` age, and `rules.trainable` never admits either.
    ephemeral: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ProfileKey(KeyBase):
    """A profile's keys, wrapped by the current key epoch. Destroying the row erases the profile.

    Two keys: the profile key itself, which seals the profile's own fields (its name, an
    account's email, factors, sessions, notices), and the item-wrapping key, which wraps
    the keys of the profile's items. The item-wrapping key is replaced (and every item key
    re-wrapped) before the epoch in which one of the profile's items was erased ends, so
    stale copies of an erased item's key are wrapped under a key that no longer exists
    anywhere (NIST SP 800-88, S6).
    """

    __tablename__ = "profile_keys"

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(Binary)
    # The key epoch that wraps both keys; None on rows from before key epochs, which a
    # master key (`master_key_id`) wraps instead until the next epoch re-wraps them.
    epoch_id: Mapped[str | None] = mapped_column(String(32), index=True)
    master_key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # The item-wrapping key; None: the item keys are wrapped under the profile key itself
    # (rows from before key epochs).
    items_wrapped: Mapped[bytes | None] = mapped_column(Binary)
    # Bumped each time the item-wrapping key is replaced: a new item key is written only
    # under the generation it was wrapped with.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # An item key under this profile was destroyed: replace the item-wrapping key before
    # the epoch ends.
    rekey_due: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Keys from before key epochs: older copies of them are wrapped under a master key or
    # under the profile key, which epochs alone do not retire.
    legacy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EpochState(StrEnum):
    CURRENT = "current"
    """Wraps new keys; every live profile key is (or is being) wrapped under it."""
    RETIRING = "retiring"
    """Replaced by a newer epoch; destroyed once nothing is wrapped under it."""
    DESTROYED = "destroyed"
    """Gone from the key source: every copy of anything it wrapped is unreadable."""


class KeyEpoch(KeyBase):
    """One key epoch: its key lives only in the key source; this row holds no key material.

    Epochs end one after another, each within half the configured window, so a destroyed
    key is unrecoverable from every copy of the key store (dead tuples, free pages, WAL,
    replicas, backups) once the epoch it was last wrapped under is destroyed (S6, A8).
    """

    __tablename__ = "key_epochs"
    __table_args__ = (
        # At most one current epoch, whatever the races of processes starting together.
        Index(
            "uq_key_epochs_one_current",
            "state",
            unique=True,
            postgresql_where=text("state = 'current'"),
            sqlite_where=text("state = 'current'"),
        ),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retiring_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A rotation in progress holds this lease (renewed by every transaction it writes,
    # and naming its worker), so two workers never rotate at once.
    rotating_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(32))


class ItemKey(KeyBase):
    """An item's key, wrapped by its profile's item-wrapping key. Destroying it erases the item."""

    __tablename__ = "item_keys"
    __table_args__ = (Index("ix_item_keys_household_profile", "household_id", "profile_id"),)

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    wrapped: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceKey(KeyBase):
    """Keys of the service itself (the blind-index key for emails), wrapped by a master key."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(Binary)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
