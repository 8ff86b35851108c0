"""Tables of exports: one row per requested copy of a profile's data (C6).

The row holds no personal content: counts, sizes, times and the ids of the sealed
package (its key in the key store and its blob, both named by `package_id`). When the
package expires, the erasure engine destroys its key, deletes its blob and clears
`package_id` and `blob_key`; the row stays as the record that an export was made,
until the profile (or the household) is erased with everything keyed by it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import UTCDateTime
from tutela.db.base import Base


class ExportState(StrEnum):
    QUEUED = "queued"
    PACKAGING = "packaging"
    READY = "ready"
    EXPIRED = "expired"
    FAILED = "failed"


class Export(Base):
    """A requested copy of one profile's data, packaged by a worker and sealed at rest."""

    __tablename__ = "exports"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        Index("ix_exports_household_account", "household_id", "requested_by", "requested_at"),
        Index("ix_exports_household_package", "household_id", "profile_id", "package_id"),
        # Workers find queued, abandoned and expired exports through this one index.
        Index("ix_exports_due", "state", "expires_at"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    requested_by: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The account that asked: the only one that sees and downloads it."""
    state: Mapped[str] = mapped_column(String(16), default=ExportState.QUEUED)
    reason: Mapped[str | None] = mapped_column(String(40))
    """Why it failed, or why it expired before its time (`items_erased`): a stable code."""
    items_total: Mapped[int] = mapped_column(Integer, default=0)
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    package_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """Names the package's key (an item key under the profile) and its blob."""
    blob_key: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bytes of the zip (plaintext), as downloaded."""
    sealed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    erasure_request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The erasure that removed the package (its receipt is that request's)."""
