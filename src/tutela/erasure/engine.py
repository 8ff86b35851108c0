"""The erasure engine: the one path through which everything in Tutela is deleted.

A request becomes a durable job whose planned steps run in order (DESIGN idea 2):

1. `mark`: the scope is under erasure. From here its reads and its ingestion are
   refused; what the remnant check will look for is noted (sealed).
2. `keys`: keys are destroyed first, so the data is unreadable at once, everywhere
   (cryptographic erase, NIST SP 800-88: S6): item keys for partial scopes, the profile
   key for a profile, every key of a household.
3. `blobs`, 4. `derived`, 5. `rows`: the ciphertext itself goes, derived artifacts
   (transcripts, thumbnails) before the items they came from, then the rows.
6. `downstream`: lineage hooks and every registered consumer are told (S7).
7. `tombstones`: keyed digests of what was erased, in the key store, so a restored
   backup can be cleaned again (S8).
8. `verify`: the remnant check looks in every store; only if it finds nothing is the
   request complete, with a signed receipt (A8). If it finds something, the steps run
   again from `keys`.

Workers claim due jobs with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL). Every
step is idempotent, so a worker killed anywhere leaves a job the next one finishes.
Obligations: A5, A8, C1, C6, C10, S6, S7, S8.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag, record
from tutela.core.clock import Clock, as_utc
from tutela.core.errors import Conflict, NotFound, ServiceUnavailable
from tutela.core.ids import uuid7
from tutela.db import registry  # noqa: F401 (every part's tables in Base.metadata)
from tutela.db.base import Base
from tutela.db.engine import Stores, purge_journal
from tutela.erasure import deadlines, downstream, receipts, remnants
from tutela.erasure.models import (
    ErasureRequest,
    RequestStatus,
    ScopeKind,
    Step,
    Tombstone,
)
from tutela.erasure.scope import ERASURE_KEY, Requester, Scope, digest, digests
from tutela.households.models import Account, Device, Household, Profile, ProfileState
from tutela.identity.models import SignInSession
from tutela.settings import Settings
from tutela.vault import crypto
from tutela.vault.models import ItemKey, ItemState, MediaItem, ProfileKey
from tutela.vault.service import Vault

log = logging.getLogger("tutela.erasure")
CHUNK = 500
MAX_VERIFY_FAILURES = 3
MAX_STEP_ATTEMPTS = 20
MAX_FINGERPRINT_IDS = 200_000
MAX_SAMPLES = 48
SAMPLE_BYTES = 24
OPEN = (RequestStatus.PENDING, RequestStatus.RUNNING, RequestStatus.BLOCKED)

# Tables whose rows are the erasure's own record: kept (their personal columns are
# wiped or nulled), never deleted with the household.
_RECORD_TABLES = frozenset({"erasure_requests", "downstream_deliveries", "audit_events"})


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Fingerprints:
    """What the job erases and what the remnant check looks for, sealed on the row."""

    subject_ids: list[str] = field(default_factory=list)
    profile_ids: list[str] = field(default_factory=list)
    account_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    blob_keys: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Fingerprints:
        return cls(**json.loads(raw))

    def sample(self, value: bytes | None) -> None:
        if value and len(self.samples) < MAX_SAMPLES and len(value) >= SAMPLE_BYTES + 12:
            # Bytes from past the nonce: unique to this ciphertext.
            self.samples.append(base64.b64encode(value[12 : 12 + SAMPLE_BYTES]).decode())


@dataclass
class Job:
    row: ErasureRequest
    scope: Scope
    fp: Fingerprints


@dataclass
class Report:
    """What one pass of the worker did."""

    completed: int = 0
    advanced: int = 0
    waiting: int = 0
    failed: int = 0


StepHook = Callable[[uuid.UUID, Step], None]


class ErasureEngine:
    """Requests erasures and runs their jobs. One per process; safe across processes."""

    def __init__(
        self,
        stores: Stores,
        vault: Vault,
        settings: Settings,
        clock: Clock,
        *,
        worker_id: str | None = None,
        sender: downstream.WebhookSender | None = None,
        lineage_hooks: Sequence[downstream.LineageHook] = (),
        after_step: StepHook | None = None,
    ) -> None:
        self.stores = stores
        self.vault = vault
        self.settings = settings
        self.clock = clock
        self.worker_id = (
            worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid7().hex[-6:]}"
        )
        self.sender = sender or downstream.HttpSender(settings.webhook_timeout_seconds)
        self.lineage_hooks = list(lineage_hooks)
        self.after_step = after_step
        self.postgresql = stores.main.dialect.name == "postgresql"
        self._steps: dict[Step, Callable[[Job], str]] = {
            Step.MARK: self._mark,
            Step.KEYS: self._keys,
            Step.BLOBS: self._blobs,
            Step.DERIVED: self._derived,
            Step.ROWS: self._rows,
            Step.DOWNSTREAM: self._downstream,
            Step.TOMBSTONES: self._tombstones,
            Step.VERIFY: self._verify,
        }

    @property
    def keys(self) -> Any:
        return self.vault.keys

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.erasure_lease_seconds)

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        hold: Callable[[uuid.UUID, uuid.UUID | None, datetime], object | None] | None = None,
        deadline: datetime | None = None,
    ) -> ErasureRequest:
        """Record an erasure request (it is confirmed by being answered: S8's 10 days).

        The same idempotency key from the same requester answers the first request; an
        identical scope already being erased answers that request.
        """
        now = self.clock.now()
        asked = self._asked_digest(scope)
        if scope.kind is ScopeKind.ITEMS and scope.until is None and not scope.item_ids:
            # "All voice" means all voice recorded up to the request.
            scope = Scope(
                kind=scope.kind,
                household_id=scope.household_id,
                profile_id=scope.profile_id,
                kinds=scope.kinds,
                since=scope.since,
                until=now,
            )
        idem = self._idem_digest(requester.ref, idempotency_key) if idempotency_key else None
        subject = digest(self.keys, "scope", hashlib.sha256(scope.canonical()).digest(), now=now)
        if idempotency_key:
            existing = self.idempotent(requester.ref, idempotency_key, scope)
            if existing is not None:
                return existing
        with self.stores.session() as session:
            held_profile = self._check_scope(session, scope)
            if hold is not None and hold(scope.household_id, held_profile, now) is not None:
                raise Conflict(
                    "A legal hold suspends deletion of this data for now.", code="legal_hold"
                )
            running = session.scalar(
                select(ErasureRequest).where(
                    ErasureRequest.subject_digest == subject, ErasureRequest.status.in_(OPEN)
                )
            )
            if running is not None:
                return running
            due = deadlines.deadlines_for(
                now,
                confirm_business_days=self.settings.erasure_confirm_business_days,
                completion_days=self.settings.erasure_completion_days,
                warn_fraction=self.settings.erasure_warn_fraction,
            )
            # GDPR's "one month" is a calendar month: never later than that (S7).
            limit = min(deadlines.one_month_after(now), deadline or due.complete_by)
            if limit < due.complete_by:
                due = deadlines.Deadlines(
                    confirm_by=due.confirm_by,
                    complete_by=limit,
                    warn_at=now + (limit - now) * self.settings.erasure_warn_fraction,
                )
            row = ErasureRequest(
                id=uuid7(),
                household_id=scope.household_id,
                scope_kind=scope.kind.value,
                scope_sealed=self._seal(scope.canonical(), "scope", now=now),
                subject_digest=subject,
                asked_digest=asked,
                requester_kind=requester.kind.value,
                requested_by=requester.ref[:80],
                idempotency_digest=idem,
                status=RequestStatus.PENDING,
                step=Step.MARK,
                step_times="{}",
                counts="{}",
                attempts=0,
                verify_failures=0,
                next_run_at=now,
                requested_at=now,
                confirmed_at=now,
                confirm_by=due.confirm_by,
                complete_by=due.complete_by,
                warn_at=due.warn_at,
            )
            session.add(row)
            if scope.item_ids:
                # Named items leave every listing (and the next sweep's selection) with
                # the request itself, not only once a worker reaches `mark`.
                for part in _chunks(scope.item_ids):
                    session.execute(
                        update(MediaItem)
                        .where(
                            MediaItem.household_id == scope.household_id,
                            MediaItem.id.in_(part),
                        )
                        .values(state=ItemState.UNDER_ERASURE)
                    )
            record(
                session,
                tag=AuditTag.ERASURE_REQUESTED,
                actor=requester.ref[:80],
                now=now,
                household_id=scope.household_id,
                subject=f"erasure:{row.id}",
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                if idem is None:
                    raise
                existing = session.scalar(
                    select(ErasureRequest).where(ErasureRequest.idempotency_digest == idem)
                )
                assert existing is not None
                return existing
            return row

    def _idem_digest(self, ref: str, idempotency_key: str) -> str:
        """Keyed, so a stored digest cannot confirm a guessed key (rules use ids in theirs)."""
        return digest(
            self.keys, "idempotency", f"{ref}\x00{idempotency_key}".encode(), now=self.clock.now()
        )

    def _asked_digest(self, scope: Scope) -> str:
        return digest(
            self.keys, "asked", hashlib.sha256(scope.canonical()).digest(), now=self.clock.now()
        )

    def idempotent(self, ref: str, idempotency_key: str, scope: Scope) -> ErasureRequest | None:
        """The request this requester made with this key, if any.

        Looked up before anything else, so a retry after the erasure took effect (the
        item gone, the profile hidden) still answers the first request. The same key
        with another scope is refused, before and after completion.
        """
        idem = self._idem_digest(ref, idempotency_key)
        with self.stores.session() as session:
            existing = session.scalar(
                select(ErasureRequest).where(ErasureRequest.idempotency_digest == idem)
            )
        if existing is None:
            return None
        if existing.asked_digest != self._asked_digest(scope):
            raise Conflict(
                "This idempotency key was used for another request.",
                code="idempotency_key_reused",
            )
        return existing

    def start(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        hold: Callable[[uuid.UUID, uuid.UUID | None, datetime], object | None] | None = None,
    ) -> ErasureRequest:
        """Request an erasure and destroy its keys before returning (S6): what a person's
        request does, so the data is unreadable by the time they see the answer."""
        row = self.request(scope, requester, idempotency_key=idempotency_key, hold=hold)
        if row.step not in (Step.MARK, Step.KEYS):
            return row
        keys_gone = False
        if self.run_request(row.id, until=Step.KEYS) is None:
            # Another worker holds the job (it may be anywhere in mark or keys): both
            # steps are idempotent, so do them here too rather than answer before the
            # keys are gone.
            job = self._load(row.id)
            try:
                self._mark(job)
                self._keys(job)
                keys_gone = True
            except Exception as exc:
                log.warning("erasure keys not destroyed inline: %s", type(exc).__name__)
        with self.stores.session() as session:
            fresh = session.get(ErasureRequest, row.id)
            assert fresh is not None
        if not keys_gone and fresh.step in (Step.MARK, Step.KEYS):
            # The keys could not be destroyed just now (a store failed): never answer as
            # if they were. The job stays queued; a worker finishes it.
            raise ServiceUnavailable(
                "The erasure is queued but could not start yet; it will run shortly.",
                code="erasure_queued",
                request_id=str(fresh.id),
            )
        return fresh

    def _check_scope(self, session: Session, scope: Scope) -> uuid.UUID | None:
        """Refuse a scope that names nothing of the household; return the profile a
        legal hold would be looked up for (None: the whole household)."""
        household = session.get(Household, scope.household_id)
        if household is None:
            raise NotFound("No such household.", code="household_not_found")
        if scope.profile_id is not None:
            profile = session.get(Profile, (scope.household_id, scope.profile_id))
            if profile is None:
                raise NotFound("No such profile.", code="profile_not_found")
        if scope.kind is ScopeKind.PROFILE:
            has_account = session.scalar(
                select(func.count())
                .select_from(Account)
                .where(
                    Account.household_id == scope.household_id,
                    Account.profile_id == scope.profile_id,
                )
            )
            if has_account:
                raise Conflict(
                    "This profile signs in to an account: close the account (household "
                    "scope) or erase its items instead.",
                    code="profile_has_account",
                )
        if scope.kind is ScopeKind.ITEM:
            item = session.get(MediaItem, (scope.household_id, scope.item_id))
            if item is None:
                raise NotFound("No such item.", code="item_not_found")
            return item.profile_id
        return scope.profile_id

    def _seal(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.seal(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    def _open(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.open_sealed(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    # --- claiming and running ------------------------------------------------------------

    def _claim(
        self, session: Session, now: datetime, request_id: uuid.UUID | None
    ) -> uuid.UUID | None:
        due = [
            ErasureRequest.status.in_((RequestStatus.PENDING, RequestStatus.RUNNING)),
            ErasureRequest.next_run_at <= now,
            or_(ErasureRequest.lease_until.is_(None), ErasureRequest.lease_until < now),
        ]
        query = select(ErasureRequest.id).where(*due).order_by(ErasureRequest.next_run_at).limit(1)
        if request_id is not None:
            query = query.where(ErasureRequest.id == request_id)
        while True:
            if self.postgresql:
                found = session.scalar(query.with_for_update(skip_locked=True))
            else:
                found = session.scalar(query)
            if found is None:
                session.rollback()
                return None
            claimed = session.execute(
                update(ErasureRequest)
                .where(ErasureRequest.id == found, *due)
                .values(
                    lease_owner=self.worker_id,
                    lease_until=now + self.lease,
                    status=RequestStatus.RUNNING,
                    attempts=ErasureRequest.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if getattr(claimed, "rowcount", 0) == 1:
                session.commit()
                return found
            session.rollback()
            if request_id is not None:
                return None

    def run_request(self, request_id: uuid.UUID, *, until: Step | None = None) -> str | None:
        """Claim this request if it is free and run it (up to `until`, inclusive)."""
        with self.stores.session() as session:
            claimed = self._claim(session, self.clock.now(), request_id)
        if claimed is None:
            return None
        return self._run(claimed, until=until)

    def run_pending(self, *, limit: int = 10) -> Report:
        """Claim and run due jobs, one after another; what a worker pass does."""
        report = Report()
        for _ in range(limit):
            with self.stores.session() as session:
                claimed = self._claim(session, self.clock.now(), None)
            if claimed is None:
                break
            outcome = self._run(claimed)
            if outcome == RequestStatus.COMPLETED:
                report.completed += 1
            elif outcome == RequestStatus.FAILED:
                report.failed += 1
            elif outcome == "wait":
                report.waiting += 1
            else:
                report.advanced += 1
        return report

    def _load(self, request_id: uuid.UUID) -> Job:
        now = self.clock.now()
        with self.stores.session() as session:
            row = session.get(ErasureRequest, request_id)
            assert row is not None and row.scope_sealed is not None
            scope = Scope.from_json(json.loads(self._open(row.scope_sealed, "scope", now=now)))
            fp = (
                Fingerprints.from_bytes(self._open(row.fingerprints_sealed, "fp", now=now))
                if row.fingerprints_sealed
                else Fingerprints()
            )
            session.expunge(row)
        return Job(row=row, scope=scope, fp=fp)

    def _run(self, request_id: uuid.UUID, *, until: Step | None = None) -> str:
        job = self._load(request_id)
        while True:
            step = Step(job.row.step)
            if step is Step.DONE:
                return RequestStatus.COMPLETED
            try:
                outcome = self._steps[step](job)
            except Exception as exc:
                # Logged by class only: messages of store errors can quote data.
                log.warning("erasure step %s failed: %s", step.value, type(exc).__name__)
                if job.row.attempts >= MAX_STEP_ATTEMPTS:
                    self._release(
                        job,
                        status=RequestStatus.FAILED,
                        error=type(exc).__name__,
                        audit={
                            "tag": AuditTag.ERASURE_FAILED,
                            "actor": "system",
                            "subject": f"erasure:{job.row.id}",
                        },
                    )
                    return RequestStatus.FAILED
                self._release(job, error=type(exc).__name__, delay=timedelta(seconds=30))
                return "error"
            if self.after_step is not None:
                self.after_step(job.row.id, step)
            if outcome == "done":  # the verify step recorded its own completion
                return RequestStatus.COMPLETED
            if outcome == "lost":
                return outcome
            if outcome in ("wait", RequestStatus.FAILED, RequestStatus.BLOCKED):
                return outcome
            following = Step.KEYS if outcome == "again" else _next(step)
            if not self._advance(job, step, following):
                return "lost"
            if following is Step.DONE:
                return RequestStatus.COMPLETED
            if until is not None and step is until:
                self._release(job)
                return "advanced"

    def _advance(
        self,
        job: Job,
        done: Step,
        following: Step,
        *,
        audit: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Record a finished step, guarded by this worker's lease; renew the lease.

        `audit` is recorded in the same transaction: a completion and its audit event
        commit together or not at all.
        """
        now = self.clock.now()
        times = json.loads(job.row.step_times or "{}")
        times[done.value] = now.isoformat()
        values.setdefault("step_times", json.dumps(times, sort_keys=True))
        values.setdefault("lease_until", now + self.lease)
        values["step"] = following
        with self.stores.session() as session:
            result = session.execute(
                update(ErasureRequest)
                .where(
                    ErasureRequest.id == job.row.id, ErasureRequest.lease_owner == self.worker_id
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                session.rollback()
                log.warning("erasure lease lost after %s; another worker carries on", done.value)
                return False
            if audit is not None:
                record(session, now=now, **audit)
            session.commit()
        job.row.step = following
        job.row.step_times = values["step_times"]
        for name, value in values.items():
            setattr(job.row, name, value)
        return True

    def renew(self, job: Job) -> bool:
        """Extend this worker's lease during a long step (the raw scan of a large file)."""
        with self.stores.session() as session:
            result = session.execute(
                update(ErasureRequest)
                .where(
                    ErasureRequest.id == job.row.id, ErasureRequest.lease_owner == self.worker_id
                )
                .values(lease_until=self.clock.now() + self.lease)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return getattr(result, "rowcount", 0) == 1

    def _release(
        self,
        job: Job,
        *,
        error: str | None = None,
        delay: timedelta | None = None,
        audit: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        """Give the job back (to run again after `delay`), under this worker's lease;
        `audit` commits with it."""
        now = self.clock.now()
        values.update(lease_owner=None, lease_until=None, next_run_at=now + (delay or timedelta()))
        if error is not None:
            values["last_error"] = error[:80]
        with self.stores.session() as session:
            result = session.execute(
                update(ErasureRequest)
                .where(
                    ErasureRequest.id == job.row.id, ErasureRequest.lease_owner == self.worker_id
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if audit is not None and getattr(result, "rowcount", 0) == 1:
                record(session, now=now, **audit)
            session.commit()

    # --- the scope's items ---------------------------------------------------------------

    def _primary(self, scope: Scope) -> Any:
        """The condition on items that the scope names directly."""
        conds: list[Any] = [MediaItem.household_id == scope.household_id]
        if scope.kind is ScopeKind.ITEM:
            conds.append(MediaItem.id == scope.item_id)
        elif scope.kind in (ScopeKind.ITEMS, ScopeKind.PROFILE):
            conds.append(MediaItem.profile_id == scope.profile_id)
        if scope.kind is ScopeKind.ITEMS:
            if scope.item_ids:
                conds.append(MediaItem.id.in_(scope.item_ids))
            if scope.kinds:
                conds.append(MediaItem.kind.in_(scope.kinds))
            if scope.since is not None:
                conds.append(MediaItem.captured_at >= scope.since)
            if scope.until is not None:
                conds.append(MediaItem.captured_at < scope.until)
        return and_(*conds)

    def _items(self, session: Session, scope: Scope) -> Any:
        """Items in scope, with every derived artifact of them, whatever their state."""
        cols = (MediaItem.id, MediaItem.blob_key, MediaItem.kind, MediaItem.source_item_id)
        primary = self._primary(scope)
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            return select(*cols).where(primary)
        sources = select(MediaItem.id).where(primary)
        return select(*cols).where(
            MediaItem.household_id == scope.household_id,
            or_(primary, MediaItem.source_item_id.in_(sources)),
        )

    # --- steps ---------------------------------------------------------------------------

    def _mark(self, job: Job) -> str:
        scope, now = job.scope, self.clock.now()
        fp = Fingerprints()
        with self.stores.session() as session:
            if scope.kind is ScopeKind.HOUSEHOLD:
                session.execute(
                    update(Household)
                    .where(Household.id == scope.household_id)
                    .values(state="under_erasure")
                )
                session.execute(
                    update(Profile)
                    .where(Profile.household_id == scope.household_id)
                    .values(state=ProfileState.UNDER_ERASURE)
                )
                session.execute(
                    update(Device)
                    .where(Device.household_id == scope.household_id, Device.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                # Everyone in the home is signed out at once: nothing is read from here on.
                session.execute(
                    delete(SignInSession).where(SignInSession.household_id == scope.household_id)
                )
            elif scope.kind is ScopeKind.PROFILE:
                session.execute(
                    update(Profile)
                    .where(
                        Profile.household_id == scope.household_id, Profile.id == scope.profile_id
                    )
                    .values(state=ProfileState.UNDER_ERASURE)
                )
            rows = session.execute(
                self._items(session, scope).add_columns(
                    MediaItem.profile_id, MediaItem.content_mac, MediaItem.sealed_fields
                )
            ).all()
            ids = [r.id for r in rows]
            if scope.kind in (ScopeKind.ITEM, ScopeKind.ITEMS):
                for part in _chunks(ids):
                    session.execute(
                        update(MediaItem)
                        .where(MediaItem.household_id == scope.household_id, MediaItem.id.in_(part))
                        .values(state=ItemState.UNDER_ERASURE)
                    )
            # What the remnant check will look for, and what the receipt counts.
            # A partial scope's profile stays: only the items themselves are looked for.
            fp.subject_ids = [] if scope.kind is ScopeKind.ITEMS else [str(scope.subject()[1])]
            fp.item_ids = [str(i) for i in ids[:MAX_FINGERPRINT_IDS]]
            fp.blob_keys = [r.blob_key for r in rows if r.blob_key][:MAX_FINGERPRINT_IDS]
            for r in rows:
                fp.counts[r.kind] = fp.counts.get(r.kind, 0) + 1
                fp.sample(r.content_mac and b"\x00" * 12 + r.content_mac)
                fp.sample(r.sealed_fields)
            profile_query = select(Profile).where(Profile.household_id == scope.household_id)
            if scope.kind is ScopeKind.PROFILE:
                profile_query = profile_query.where(Profile.id == scope.profile_id)
            if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
                for profile in session.scalars(profile_query):
                    fp.profile_ids.append(str(profile.id))
                    fp.sample(profile.name_sealed)
                    fp.sample(profile.birth_date_sealed)
                fp.counts["profiles"] = len(fp.profile_ids)
            if scope.kind is ScopeKind.HOUSEHOLD:
                for account in session.scalars(
                    select(Account).where(Account.household_id == scope.household_id)
                ):
                    fp.account_ids.append(str(account.id))
                    fp.sample(account.email_sealed)
                    fp.sample(b"\x00" * 12 + account.email_index)
                fp.counts["accounts"] = len(fp.account_ids)
            self._sample_keys(fp, scope)
            values: dict[str, Any] = {
                "fingerprints_sealed": self._seal(fp.to_bytes(), "fp", now=now),
                "counts": json.dumps(fp.counts, sort_keys=True),
            }
            if job.row.fingerprints_sealed is not None:
                # A re-run after a crash: the first fingerprints (taken before anything
                # was deleted) stay; they are a superset of what is left now.
                values = {}
            if values:
                session.execute(
                    update(ErasureRequest).where(ErasureRequest.id == job.row.id).values(**values)
                )
            session.commit()
        if values:
            job.fp = fp
            job.row.counts = values["counts"]
        return "next"

    def _sample_keys(self, fp: Fingerprints, scope: Scope) -> None:
        with self.stores.key_sessions() as ks:
            if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
                query = select(ProfileKey.wrapped).where(
                    ProfileKey.household_id == scope.household_id
                )
                if scope.kind is ScopeKind.PROFILE:
                    query = query.where(ProfileKey.profile_id == scope.profile_id)
                for wrapped in ks.scalars(query.limit(16)):
                    fp.sample(wrapped)
            ids = [uuid.UUID(i) for i in fp.item_ids[:64]]
            if ids:
                for wrapped in ks.scalars(
                    select(ItemKey.wrapped).where(
                        ItemKey.household_id == scope.household_id, ItemKey.item_id.in_(ids)
                    )
                ):
                    fp.sample(wrapped)

    def _scope_ids(self, scope: Scope) -> list[tuple[uuid.UUID, str | None, str | None]]:
        with self.stores.session() as session:
            return [
                (r.id, r.blob_key, r.source_item_id)
                for r in session.execute(self._items(session, scope)).all()
            ]

    def _grew(self, job: Job) -> bool:
        """For a partial scope: did items join it since `mark` (an upload that raced the
        request)? They are added to what the job erases and checks, and the steps run
        again from `keys`, so no blob or row goes before its key."""
        scope = job.scope
        if scope.kind not in (ScopeKind.ITEM, ScopeKind.ITEMS):
            return False
        known = set(job.fp.item_ids)
        rows = [r for r in self._scope_ids(scope) if str(r[0]) not in known]
        if not rows:
            return False
        now = self.clock.now()
        with self.stores.session() as session:
            for item in session.scalars(
                select(MediaItem).where(
                    MediaItem.household_id == scope.household_id,
                    MediaItem.id.in_([r[0] for r in rows]),
                )
            ):
                job.fp.item_ids.append(str(item.id))
                if item.blob_key:
                    job.fp.blob_keys.append(item.blob_key)
                job.fp.counts[item.kind] = job.fp.counts.get(item.kind, 0) + 1
                item.state = ItemState.UNDER_ERASURE
            session.execute(
                update(ErasureRequest)
                .where(ErasureRequest.id == job.row.id)
                .values(
                    fingerprints_sealed=self._seal(job.fp.to_bytes(), "fp", now=now),
                    counts=json.dumps(job.fp.counts, sort_keys=True),
                )
            )
            session.commit()
        job.row.counts = json.dumps(job.fp.counts, sort_keys=True)
        log.info("erasure scope grew by %d items; keys again", len(rows))
        return True

    def _keys(self, job: Job) -> str:
        scope = job.scope
        if scope.kind is ScopeKind.HOUSEHOLD:
            self.keys.destroy_household_keys(household_id=scope.household_id)
        elif scope.kind is ScopeKind.PROFILE:
            assert scope.profile_id is not None
            self.keys.destroy_profile_key(
                household_id=scope.household_id, profile_id=scope.profile_id
            )
        else:
            ids = {i for i, _, _ in self._scope_ids(scope)} | {
                uuid.UUID(i) for i in job.fp.item_ids
            }
            for part in _chunks(sorted(ids)):
                self.keys.destroy_item_keys(household_id=scope.household_id, item_ids=part)
        return "next"

    def _blobs(self, job: Job) -> str:
        if self._grew(job):
            return "again"
        scope, blobs = job.scope, self.vault.blobs
        if scope.kind is ScopeKind.HOUSEHOLD:
            # The whole prefix: orphans of crashed uploads go with it.
            blobs.delete_prefix(f"{scope.household_id}/")
        elif scope.kind is ScopeKind.PROFILE:
            blobs.delete_prefix(f"{scope.household_id}/{scope.profile_id}/")
        else:
            keys = {b for _, b, _ in self._scope_ids(scope) if b} | set(job.fp.blob_keys)
            blobs.delete_many(sorted(keys))
        return "next"

    def _derived(self, job: Job) -> str:
        """Derived artifacts (transcripts, thumbnails) before the items they came from."""
        if self._grew(job):
            return "again"
        scope = job.scope
        with self.stores.session() as session:
            if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
                session.execute(
                    delete(MediaItem).where(
                        self._primary(scope), MediaItem.source_item_id.is_not(None)
                    )
                )
            else:
                ids = [i for i, _, source in self._scope_ids(scope) if source is not None]
                for part in _chunks(ids):
                    session.execute(
                        delete(MediaItem).where(
                            MediaItem.household_id == scope.household_id, MediaItem.id.in_(part)
                        )
                    )
            session.commit()
        return "next"

    def _rows(self, job: Job) -> str:
        if self._grew(job):
            return "again"
        scope = job.scope
        erased = "erased:" + job.row.subject_digest[:16]
        with self.stores.session() as session:
            if scope.kind is ScopeKind.HOUSEHOLD:
                accounts = [f"account:{a}" for a in job.fp.account_ids]
                self._household_rows(session, scope.household_id, erased, accounts)
            elif scope.kind is ScopeKind.PROFILE:
                self._profile_rows(session, scope, erased)
            else:
                ids = [i for i, _, _ in self._scope_ids(scope)]
                for part in _chunks(ids):
                    session.execute(
                        delete(MediaItem).where(
                            MediaItem.household_id == scope.household_id, MediaItem.id.in_(part)
                        )
                    )
            session.commit()
        purge_journal(self.stores.main)
        return "next"

    def _profile_rows(self, session: Session, scope: Scope, erased: str) -> None:
        hh, pid = scope.household_id, scope.profile_id
        session.execute(
            delete(MediaItem).where(MediaItem.household_id == hh, MediaItem.profile_id == pid)
        )
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in ("items", "profiles", "accounts") or "household_id" not in table.c:
                continue
            for column in ("profile_id", "child_profile_id"):
                if column in table.c:
                    session.execute(
                        delete(table).where(table.c.household_id == hh, table.c[column] == pid)
                    )
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.household_id == hh, AuditEvent.subject == f"profile:{pid}")
            .values(subject=erased)
        )
        session.execute(delete(Profile).where(Profile.household_id == hh, Profile.id == pid))

    def _household_rows(
        self, session: Session, hh: uuid.UUID, erased: str, accounts: list[str]
    ) -> None:
        """Every row of every table keyed by the household, children before parents."""
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in _RECORD_TABLES or "household_id" not in table.c:
                continue
            session.execute(delete(table).where(table.c.household_id == hh))
        session.execute(delete(Household).where(Household.id == hh))
        # The audit trail keeps what happened and when, not whom it was about.
        # Employees, operators and rules stay named: who acted on a household is kept.
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.household_id == hh)
            .values(
                household_id=None,
                subject=erased,
                actor=case((AuditEvent.actor.in_(accounts), erased), else_=AuditEvent.actor),
            )
        )
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.household_id == hh)
            .values(
                household_id=None,
                requested_by=case(
                    (ErasureRequest.requested_by.in_(accounts), None),
                    else_=ErasureRequest.requested_by,
                ),
            )
        )

    def _downstream(self, job: Job) -> str:
        scope, now = job.scope, self.clock.now()
        item_ids = [uuid.UUID(i) for i in job.fp.item_ids]
        profile_ids = [uuid.UUID(p) for p in job.fp.profile_ids]
        for hook in self.lineage_hooks:
            hook.erased(
                request_id=job.row.id,
                household_id=scope.household_id,
                profile_ids=profile_ids,
                item_ids=item_ids,
            )
        payload = {
            "type": "tutela.erasure",
            "request_id": str(job.row.id),
            "scope": scope.kind.value,
            "household_id": str(scope.household_id),
            "profile_ids": job.fp.profile_ids,
            "item_ids": job.fp.item_ids,
        }
        with self.stores.session() as session:
            downstream.enqueue(session, self.keys, request_id=job.row.id, payload=payload, now=now)
        downstream.deliver_due(self.stores, self.keys, self.sender, now=now, request_id=job.row.id)
        with self.stores.session() as session:
            state = downstream.pending(session, request_id=job.row.id)
        if state.dead:
            self._release(job, status=RequestStatus.BLOCKED, error="downstream_dead_letter")
            return RequestStatus.BLOCKED
        if state.waiting:
            wait = (state.next_attempt_at or now) - now
            self._release(job, delay=max(wait, timedelta(seconds=1)))
            return "wait"
        return "next"

    def _tombstones(self, job: Job) -> str:
        now, scope = self.clock.now(), job.scope
        rows: dict[tuple[str, str], None] = {}
        kinds = [("item", job.fp.item_ids), ("profile", job.fp.profile_ids)]
        if scope.kind is ScopeKind.HOUSEHOLD:
            kinds += [("household", job.fp.subject_ids), ("account", job.fp.account_ids)]
        for kind, values in kinds:
            for d in digests(self.keys, kind, [uuid.UUID(v) for v in values], now=now):
                rows[(kind, d)] = None
        stones = [
            {"subject_kind": k, "subject_digest": d, "request_id": job.row.id, "erased_at": now}
            for k, d in rows
        ]
        insert = pg_insert if self.stores.keys.dialect.name == "postgresql" else sqlite_insert
        with self.stores.key_sessions() as ks:
            for part in _chunks(stones, 1000):
                # executemany: the driver batches the rows (no 1,000-row statement to compile).
                ks.execute(insert(Tombstone).on_conflict_do_nothing(), list(part))
            ks.commit()
        return "next"

    def _verify(self, job: Job) -> str:
        now = self.clock.now()
        if job.scope.kind is ScopeKind.HOUSEHOLD:
            with self.stores.session() as session:
                session.execute(
                    update(ErasureRequest)
                    .where(ErasureRequest.id == job.row.id)
                    .values(
                        household_id=None,
                        requested_by=case(
                            (ErasureRequest.requested_by.like("account:%"), None),
                            else_=ErasureRequest.requested_by,
                        ),
                    )
                )
                session.commit()
        result = remnants.check(self, job)
        now = self.clock.now()  # the check can take seconds: the receipt says when it ended
        if not result.clean:
            failures = job.row.verify_failures + 1
            findings = json.dumps([f.__dict__ for f in result.findings], sort_keys=True)
            log.warning("remnant check found %d remnants", sum(f.count for f in result.findings))
            if failures >= MAX_VERIFY_FAILURES:
                self._release(
                    job,
                    status=RequestStatus.FAILED,
                    findings=findings,
                    verify_failures=failures,
                    error="remnants_found",
                    audit={
                        "tag": AuditTag.ERASURE_FAILED,
                        "actor": "system",
                        "subject": f"erasure:{job.row.id}",
                    },
                )
                return RequestStatus.FAILED
            job.row.verify_failures = failures
            self._advance(job, Step.VERIFY, Step.KEYS, findings=findings, verify_failures=failures)
            self._release(job, delay=timedelta(seconds=5 * failures))
            return "wait"
        times = json.loads(job.row.step_times or "{}")
        times[Step.VERIFY.value] = now.isoformat()
        body = self._receipt_body(job, times, result, now)
        receipt = receipts.sign_receipt(self.keys, body, now=now)
        done = self._advance(
            job,
            Step.VERIFY,
            Step.DONE,
            step_times=json.dumps(times, sort_keys=True),
            status=RequestStatus.COMPLETED,
            completed_at=now,
            receipt=json.dumps(receipt, sort_keys=True),
            scope_sealed=None,
            fingerprints_sealed=None,
            findings=None,
            lease_owner=None,
            lease_until=None,
            audit={
                "tag": AuditTag.ERASURE_COMPLETED,
                "actor": "system",
                "household_id": (
                    None if job.scope.kind is ScopeKind.HOUSEHOLD else job.scope.household_id
                ),
                "subject": f"erasure:{job.row.id}",
            },
        )
        if not done:
            return "lost"
        purge_journal(self.stores.main)
        return "done"

    def _receipt_body(
        self, job: Job, times: dict[str, str], result: remnants.Result, now: datetime
    ) -> dict[str, Any]:
        scope = job.scope
        subject_kind, subject_id = scope.subject()
        salt = secrets.token_bytes(16)
        return {
            "request_id": str(job.row.id),
            "issuer": self.settings.origin,
            "scope": {
                "kind": scope.kind.value,
                "subject_kind": subject_kind,
                # The customer, who knows the id, can check it: sha256(salt || id text).
                "subject_salt": base64.b64encode(salt).decode(),
                "subject_sha256": hashlib.sha256(salt + str(subject_id).encode()).hexdigest(),
                "kinds": sorted(scope.kinds),
                "since": as_utc(scope.since).isoformat() if scope.since else None,
                "until": as_utc(scope.until).isoformat() if scope.until else None,
            },
            "requested_by": job.row.requester_kind,
            "counts": json.loads(job.row.counts or "{}"),
            "steps": times,
            "remnant_check": {
                "result": "clean",
                "at": now.isoformat(),
                "stores": result.stores,
            },
            "requested_at": as_utc(job.row.requested_at).isoformat(),
            "confirmed_at": as_utc(job.row.confirmed_at).isoformat()
            if job.row.confirmed_at
            else None,
            "complete_by": as_utc(job.row.complete_by).isoformat(),
            "completed_at": now.isoformat(),
            "deadline_met": now <= as_utc(job.row.complete_by),
        }

    # --- deadlines -----------------------------------------------------------------------

    def check_deadlines(self) -> int:
        """Warn once per request at 80% of its completion limit (S7, S8); returns how many.

        The warning goes to the audit log and, as one notice, to the operator's team.
        """
        from tutela.notices.service import NoticeKind, enqueue  # noqa: PLC0415

        now = self.clock.now()
        with self.stores.session() as session:
            rows = session.scalars(
                select(ErasureRequest).where(
                    ErasureRequest.status.in_(OPEN),
                    ErasureRequest.warn_at <= now,
                    ErasureRequest.warned_at.is_(None),
                )
            ).all()
            for row in rows:
                row.warned_at = now
                record(
                    session,
                    tag=AuditTag.ERASURE_DEADLINE_WARNING,
                    actor="system",
                    now=now,
                    subject=f"erasure:{row.id}",
                )
            if rows:
                enqueue(
                    session,
                    self.keys,
                    kind=NoticeKind.ERASURE_DEADLINE,
                    owner=None,
                    params={
                        "at": now.isoformat(),
                        "count": str(len(rows)),
                        "percent": str(round(self.settings.erasure_warn_fraction * 100)),
                    },
                    now=now,
                )
            session.commit()
        if rows:
            log.warning(
                "%d erasure requests passed %d%% of their limit",
                len(rows),
                round(self.settings.erasure_warn_fraction * 100),
            )
        return len(rows)

    def retry_downstream(self) -> int:
        """Deliver due downstream retries (worker pass); waiting jobs then move on."""
        return downstream.deliver_due(self.stores, self.keys, self.sender, now=self.clock.now())


def _next(step: Step) -> Step:
    order = list(Step)
    return order[order.index(step) + 1]


def tombstoned(
    stores: Stores, keys: Any, subject_kind: str, ids: Iterable[uuid.UUID], *, now: datetime
) -> set[uuid.UUID]:
    """Which of `ids` were erased (their tombstone exists)."""
    by_digest = digests(keys, subject_kind, ids, now=now)
    found: set[uuid.UUID] = set()
    names = list(by_digest)
    with stores.key_sessions() as ks:
        for part in _chunks(names, 1000):
            for d in ks.scalars(
                select(Tombstone.subject_digest).where(
                    Tombstone.subject_kind == subject_kind, Tombstone.subject_digest.in_(part)
                )
            ):
                found.add(by_digest[d])
    return found
