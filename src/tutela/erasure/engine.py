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

A job that cannot finish (a step failing `MAX_STEP_ATTEMPTS` times in a row, or the
remnant check unclean `MAX_VERIFY_FAILURES` times) is `failed` (`fail`): still open, held
to its deadline, and the privacy team is told. An operator fixes the fault and runs it
again (`retry`, or a new request for the same subject).

Workers claim due jobs with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL). Every
step is idempotent, so a worker killed anywhere leaves a job the next one finishes.
Obligations: A5, A8, C1, C6, C10, S6, S7, S8.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.clock import Clock
from tutela.core.errors import TutelaError
from tutela.core.ids import uuid7
from tutela.db import registry  # noqa: F401 (every part's tables in Base.metadata)
from tutela.db.engine import Stores
from tutela.erasure import completion, downstream, intake, late, recovery, steps
from tutela.erasure.jobs import (
    CLAIMABLE,
    MAX_STEP_ATTEMPTS,
    OPEN,
    Fingerprints,
    Job,
    Report,
    StepHook,
)
from tutela.erasure.models import ErasureRequest, RequestStatus, ScopeKind, Step
from tutela.erasure.scope import ERASURE_KEY, BatchOutcome, Member, Requester, Scope
from tutela.erasure.wake import Wakeup, wakeup_for
from tutela.notices.mail import mailer_from_settings
from tutela.notices.port import Notices, OutboxNotices
from tutela.settings import Settings
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore
from tutela.vault.service import Vault

log = logging.getLogger("tutela.erasure")
__all__ = ["OPEN", "ErasureEngine", "Report"]


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
        notices: Notices | None = None,
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
        # Delivers a closing household's notices before its keys go; discards the mailed
        # copies of notices it erases (A5, C6).
        self.notices = notices or OutboxNotices(
            stores, vault.keys, mailer_from_settings(settings), settings
        )
        self.postgresql = stores.main.dialect.name == "postgresql"
        self.wakeup: Wakeup = wakeup_for(stores.main)  # work arrived: wake a worker (wake.py)
        self._steps: dict[Step, Callable[[Job], str]] = {
            Step.MARK: lambda job: steps.mark(self, job),
            Step.KEYS: lambda job: steps.destroy_keys(self, job),
            Step.BLOBS: lambda job: steps.blobs(self, job),
            Step.DERIVED: lambda job: steps.derived(self, job),
            Step.ROWS: lambda job: steps.rows(self, job),
            Step.DOWNSTREAM: lambda job: completion.downstream(self, job),
            Step.TOMBSTONES: lambda job: completion.tombstones(self, job),
            Step.VERIFY: lambda job: completion.verify(self, job),
        }

    @property
    def keys(self) -> KeyStore:
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
        hold: intake.Hold | None = None,
        deadline: datetime | None = None,
        wake: bool = True,
    ) -> ErasureRequest:
        """Record an erasure request; see `intake.request`."""
        return intake.request(
            self,
            scope,
            requester,
            idempotency_key=idempotency_key,
            hold=hold,
            deadline=deadline,
            wake=wake,
        )

    def request_batch(
        self,
        members: Sequence[Member],
        requester: Requester,
        *,
        hold: intake.Hold | None = None,
    ) -> BatchOutcome:
        """Request the erasure of `members` (items named one by one, across profiles and
        households) as batch jobs of up to `erasure_batch_size` items; members under a
        legal hold are left out and counted (A6, C9)."""
        outcome = BatchOutcome()
        groups: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = {}
        for m in members:
            groups.setdefault((m.household_id, m.profile_id), []).append(m.item_id)
        for (household_id, profile_id), ids in groups.items():
            scope = Scope(
                ScopeKind.ITEMS, household_id, profile_id=profile_id, item_ids=tuple(sorted(ids))
            )
            try:
                row = self.request(scope, requester, hold=hold)
            except TutelaError as exc:
                log.info("batch erasure left out members: %s", exc.code)
                outcome.held += len(ids)
                continue
            if row.id not in outcome.requests:
                outcome.requests.append(row.id)
        return outcome

    def idempotent(self, ref: str, idempotency_key: str, scope: Scope) -> ErasureRequest | None:
        """The request this requester made with this key, if any; see `intake.idempotent`."""
        return intake.idempotent(self, ref, idempotency_key, scope)

    def start(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        hold: intake.Hold | None = None,
    ) -> ErasureRequest:
        """Request an erasure and destroy its keys before returning; see `intake.start`."""
        return intake.start(self, scope, requester, idempotency_key=idempotency_key, hold=hold)

    def seal(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.seal(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    def open(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.open_sealed(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    # --- claiming and running ------------------------------------------------------------

    def _claim(
        self, session: Session, now: datetime, request_id: uuid.UUID | None
    ) -> uuid.UUID | None:
        due = [
            ErasureRequest.status.in_(CLAIMABLE),
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

    def load(self, request_id: uuid.UUID) -> Job:
        now = self.clock.now()
        with self.stores.session() as session:
            row = session.get(ErasureRequest, request_id)
            assert row is not None and row.scope_sealed is not None
            scope = Scope.from_json(json.loads(self.open(row.scope_sealed, "scope", now=now)))
            fp = (
                Fingerprints.from_bytes(self.open(row.fingerprints_sealed, "fp", now=now))
                if row.fingerprints_sealed
                else Fingerprints()
            )
            session.expunge(row)
        return Job(row=row, scope=scope, fp=fp)

    def _run(self, request_id: uuid.UUID, *, until: Step | None = None) -> str:
        job = self.load(request_id)
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
                    failed = self.fail(job, error=type(exc).__name__)
                    return RequestStatus.FAILED if failed else "lost"
                self.release(job, error=type(exc).__name__, delay=timedelta(seconds=30))
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
            # Back to `keys` (items joined the scope): nothing is "unreadable everywhere"
            # until the new keys' epoch is gone too.
            again = {"copies_unreadable_at": None} if outcome == "again" else {}
            if not self.advance(job, step, following, **again):
                return "lost"
            if following is Step.DONE:
                return RequestStatus.COMPLETED
            if until is not None and step is until:
                self.release(job)
                return "advanced"

    def advance(
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
        commit together or not at all. Progress restarts the attempt count (this run
        is the next step's first), so `MAX_STEP_ATTEMPTS` counts runs of one step in a
        row, not every claim of a long job.
        """
        now = self.clock.now()
        times = json.loads(job.row.step_times or "{}")
        times[done.value] = now.isoformat()
        values.setdefault("step_times", json.dumps(times, sort_keys=True))
        values.setdefault("lease_until", now + self.lease)
        values.setdefault("attempts", 1)
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

    def release(
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
            if not delay:
                self.wakeup.announce(session)  # due at once: the next pass need not wait
            session.commit()
        if not delay:
            self.wakeup.local()

    def fail(self, job: Job, *, error: str, **values: Any) -> bool:
        """Give the job up for an operator to look at: the one way a request becomes
        `failed`. The status, its audit event and one notice to the privacy team commit
        together, under this worker's lease; False if the lease was lost.

        A failed request is never called deleted (A8) and stays open: listed by
        `erasure list --open`, warned about at its deadline (S7, S8), run again by
        `retry` or by a new request for the same subject. The notice holds a count and
        a time only: no id, no personal data.
        """
        from tutela.notices.service import NoticeKind, enqueue  # noqa: PLC0415

        now = self.clock.now()
        values.update(
            status=RequestStatus.FAILED,
            last_error=error[:80],
            lease_owner=None,
            lease_until=None,
            next_run_at=now,
        )
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
                log.warning("erasure lease lost before it failed; another worker carries on")
                return False
            record(
                session,
                tag=AuditTag.ERASURE_FAILED,
                actor="system",
                now=now,
                subject=f"erasure:{job.row.id}",
            )
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.ERASURE_FAILED,
                owner=None,
                params={"at": now.isoformat(), "count": "1"},
                now=now,
            )
            session.commit()
        for name, value in values.items():
            setattr(job.row, name, value)
        log.warning("erasure request failed at step %s: %s", job.row.step, error[:80])
        return True

    def retry(self, request_id: uuid.UUID, *, by: str) -> ErasureRequest:
        """Run a failed (or blocked) request again; see `recovery.retry`."""
        return recovery.retry(self, request_id, by=by)

    # --- deadlines -----------------------------------------------------------------------

    def check_deadlines(self) -> int:
        """Warn once per request at 80% of its completion limit (S7, S8); returns how many
        (`late.warn_late`)."""
        return late.warn_late(self.stores, self.keys, self.settings, now=self.clock.now())

    def retry_downstream(self) -> int:
        """Deliver due downstream retries (worker pass); waiting jobs then move on."""
        return downstream.deliver_due(self.stores, self.keys, self.sender, now=self.clock.now())


def _next(step: Step) -> Step:
    order = list(Step)
    return order[order.index(step) + 1]
