"""Tables of the erasure engine.

Requests and downstream deliveries live in the main store. Tombstones live in the key
store: a restored backup of the main database must not bring back the record of what
was erased, or `tutela backup restore-check` could not re-apply it (S8).

No table here holds personal data once a request completes: the scope is sealed while
the job runs and wiped when it ends; what stays are keyed digests, counts and times.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base, KeyBase


class ScopeKind(StrEnum):
    ITEM = "item"
    """One item with its derived artifacts."""
    ITEMS = "items"
    """A profile's items of some kinds, in a time range, or named one by one."""
    PROFILE = "profile"
    HOUSEHOLD = "household"
    BATCH = "batch"
    """Up to `erasure_batch_size` items named one by one, across profiles and households:
    a retention sweep's batch, an automatic-deletion pass, a disgorgement. One job, one
    receipt with counts per subject under the subjects' digests."""


class RequesterKind(StrEnum):
    ADULT = "adult"
    GUARDIAN = "guardian"
    RETENTION = "retention"
    AUTO_DELETE = "auto_delete"
    INACTIVE_CHILD = "inactive_child"
    PRIVACY_OFFICER = "privacy_officer"
    ACCOUNT_CLOSURE = "account_closure"
    RESTORE_CHECK = "restore_check"
    EXPORT_EXPIRY = "export_expiry"
    """An export's package, once its download link has expired (C6)."""


class RequestStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    BLOCKED = "blocked"
    """Waiting on a downstream consumer that stopped answering (dead-lettered)."""
    COMPLETED = "completed"
    FAILED = "failed"
    """A step kept failing or the remnant check kept finding something: still open (its
    deadline runs), the privacy team is told, and an operator runs it again."""


class Step(StrEnum):
    MARK = "mark"
    KEYS = "keys"
    COLLECT = "collect"
    BLOBS = "blobs"
    DERIVED = "derived"
    ROWS = "rows"
    DOWNSTREAM = "downstream"
    TOMBSTONES = "tombstones"
    VERIFY = "verify"
    DONE = "done"


STEPS: tuple[Step, ...] = tuple(Step)


class ErasureRequest(Base):
    __tablename__ = "erasure_requests"
    __table_args__ = (
        Index("ix_erasure_requests_due", "status", "next_run_at"),
        Index("ix_erasure_requests_household", "household_id", "requested_at"),
        UniqueConstraint("idempotency_digest"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # Cleared when a household's own erasure completes: it names the erased subject.
    household_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    scope_kind: Mapped[str] = mapped_column(String(16))
    # The scope's ids, kinds and range, sealed under the service key `erasure`; wiped
    # when the request ends.
    scope_sealed: Mapped[bytes | None] = mapped_column(Binary)
    subject_digest: Mapped[str] = mapped_column(String(64), index=True)
    # Keyed digest of the scope as asked (before "up to now" is fixed): an idempotent
    # retry is compared with it, even after the sealed scope is wiped.
    asked_digest: Mapped[str] = mapped_column(String(64))
    requester_kind: Mapped[str] = mapped_column(String(24))
    requested_by: Mapped[str | None] = mapped_column(String(80))
    idempotency_digest: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.PENDING)
    step: Mapped[str] = mapped_column(String(16), default=Step.MARK)
    step_times: Mapped[str] = mapped_column(Text, default="{}")
    counts: Mapped[str] = mapped_column(Text, default="{}")
    findings: Mapped[str | None] = mapped_column(Text)
    # What the raw scan looks for (ids, ciphertext samples), sealed; wiped at the end.
    fingerprints_sealed: Mapped[bytes | None] = mapped_column(Binary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    verify_failures: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirm_by: Mapped[datetime] = mapped_column(UTCDateTime)
    complete_by: Mapped[datetime] = mapped_column(UTCDateTime)
    warn_at: Mapped[datetime] = mapped_column(UTCDateTime)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    receipt: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(String(80))
    # The newest key epoch under which a key this request destroyed was wrapped: once it is
    # destroyed in the key source, no copy of those keys anywhere can be unwrapped (S6).
    key_epoch: Mapped[int | None] = mapped_column(Integer, index=True)
    # When every copy will be unreadable at the latest (None: not bounded, keys older than
    # key epochs), and when it was (the epoch's destruction).
    copies_unreadable_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    copies_unreadable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DownstreamConsumer(Base):
    """A system outside Tutela that keeps copies and must be told of each erasure (S7)."""

    __tablename__ = "downstream_consumers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    # The HMAC secret that signs each notification, sealed under the service key.
    secret_sealed: Mapped[bytes] = mapped_column(Binary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DownstreamDelivery(Base):
    """One erasure notice to one consumer: retried with backoff, then dead-lettered."""

    __tablename__ = "downstream_deliveries"
    __table_args__ = (
        UniqueConstraint("request_id", "consumer_id"),
        Index("ix_downstream_deliveries_due", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("erasure_requests.id"))
    consumer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("downstream_consumers.id"))
    # The ids the consumer must delete, sealed; wiped once it has confirmed.
    payload_sealed: Mapped[bytes | None] = mapped_column(Binary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(80))


class Tombstone(KeyBase):
    """That a subject was erased, by a keyed digest of its id: no personal data (S8)."""

    __tablename__ = "tombstones"

    subject_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
