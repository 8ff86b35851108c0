"""A worker's hold on an erasure job: claiming it, recording its steps, giving it back.

Workers claim due jobs with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the write
lock on SQLite); every write a worker makes to its job is guarded by its name on the
lease, so a worker that lost its lease (it stalled past it, another claimed the job)
changes nothing. A step that works in the main store records its completion in its own
transaction (`advance(..., session=)`), as the first statement there: the step's work
and the record of it commit together or not at all (A5, A8, S7).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.clock import Clock
from tutela.db.engine import Stores
from tutela.erasure.jobs import CLAIMABLE, Job
from tutela.erasure.models import ErasureRequest, RequestStatus, Step
from tutela.erasure.wake import Wakeup
from tutela.vault.keystore import KeyStore

log = logging.getLogger("tutela.erasure")


class Leases:
    """Claims, step records and releases of erasure jobs for one worker (`worker_id`)."""

    def __init__(
        self,
        stores: Stores,
        keys: KeyStore,
        clock: Clock,
        worker_id: str,
        lease: timedelta,
        *,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.wakeup = wakeup
        self.stores = stores
        self.keys = keys
        self.clock = clock
        self.worker_id = worker_id
        self.lease = lease
        self.postgresql = stores.main.dialect.name == "postgresql"

    def _mine(self, job: Job) -> Any:
        return (ErasureRequest.id == job.row.id) & (ErasureRequest.lease_owner == self.worker_id)

    def claim(self, request_id: uuid.UUID | None = None) -> uuid.UUID | None:
        """Claim one due job (this one, if named); None if none is free."""
        now = self.clock.now()
        due = [
            ErasureRequest.status.in_(CLAIMABLE),
            ErasureRequest.next_run_at <= now,
            or_(ErasureRequest.lease_until.is_(None), ErasureRequest.lease_until < now),
        ]
        query = select(ErasureRequest.id).where(*due).order_by(ErasureRequest.next_run_at).limit(1)
        if request_id is not None:
            query = query.where(ErasureRequest.id == request_id)
        with self.stores.session() as session:
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

    def advance(
        self,
        job: Job,
        done: Step,
        following: Step,
        *,
        session: Session | None = None,
        audit: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Record a finished step, guarded by this worker's lease; renew the lease.

        With `session`, the record is made in the caller's transaction (the step's own
        work) and not committed here: the caller commits both, or rolls both back when
        this returns False. `audit` is recorded in the same transaction. Progress restarts
        the attempt count, so `MAX_STEP_ATTEMPTS` counts runs of one step in a row.
        """
        now = self.clock.now()
        times = json.loads(job.row.step_times or "{}")
        times[done.value] = now.isoformat()
        values.setdefault("step_times", json.dumps(times, sort_keys=True))
        values.setdefault("lease_until", now + self.lease)
        values.setdefault("attempts", 1)
        values["step"] = following
        own = session is None
        active = session if session is not None else self.stores.session()
        try:
            result = active.execute(
                update(ErasureRequest)
                .where(self._mine(job))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                active.rollback()
                log.warning("erasure lease lost after %s; another worker carries on", done.value)
                return False
            if audit is not None:
                record(active, now=now, **audit)
            if own:
                active.commit()
        finally:
            if own:
                active.close()
        for name, value in values.items():
            setattr(job.row, name, value)
        return True

    def renew(self, job: Job) -> bool:
        """Extend this worker's lease during a long step (the raw scan of a large file)."""
        with self.stores.session() as session:
            result = session.execute(
                update(ErasureRequest)
                .where(self._mine(job))
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
                .where(self._mine(job))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1 and audit is not None:
                record(session, now=now, **audit)
            if not delay and self.wakeup is not None:
                self.wakeup.announce(session)  # due at once: the next pass need not wait
            session.commit()
        if not delay and self.wakeup is not None:
            self.wakeup.local()
        for name, value in values.items():
            setattr(job.row, name, value)

    def fail(self, job: Job, *, error: str, **values: Any) -> bool:
        """Mark the request failed: still open (its deadline runs), audited, and the privacy
        team told (`ERASURE_FAILED`), all in one transaction under this worker's lease.

        False if the lease was lost meanwhile (another worker carries on). The notice holds
        a count and a time only: no id, no personal data.
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
                .where(self._mine(job))
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
