"""Tables of the vault: media items in the main store, keys in the key store."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, String, Uuid
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
        # Retention sweeps find expired items by kind and age (A6, C9); on a sharded
        # store this index is local to each shard like the others.
        Index("ix_items_kind_captured", "kind", "captured_at"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    device_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    source_item_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(16))
    media_type: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    size: Mapped[int] = mapped_column(BigInteger)
    content_mac: Mapped[bytes] = mapped_column(Binary)
    blob_key: Mapped[str | None] = mapped_column(String(200))
    sealed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    sealed_fields: Mapped[bytes | None] = mapped_column(Binary)
    state: Mapped[str] = mapped_column(String(16), default=ItemState.ACTIVE)


class ProfileKey(KeyBase):
    """A profile's key, wrapped by a master key. Destroying it erases the profile."""

    __tablename__ = "profile_keys"

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(Binary)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ItemKey(KeyBase):
    """An item's key, wrapped by its profile's key. Destroying it erases the item."""

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
