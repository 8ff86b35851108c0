"""Running a failed or blocked erasure request again: an operator's retry, and a new
request for the same subject (A8, C6, C10, S7, S8).

A request fails when a step keeps failing or the remnant check keeps finding something
(`ErasureEngine.fail`). It is never called deleted, but it stays open: its deadline runs
on from the first request, since that is when the legal clock started (S7, S8).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, NotFound
from tutela.erasure.jobs import OPEN, RETRYABLE
from tutela.erasure.models import DownstreamDelivery, ErasureRequest, RequestStatus, Step

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine


def resume_step(row: ErasureRequest) -> Step:
    """Where a request runs again: the step that failed, or `keys` after an unclean
    remnant check (whatever was found goes keys first, as on the first run)."""
    return Step.KEYS if row.step == Step.VERIFY else Step(row.step)


def requeue(session: Session, row: ErasureRequest, *, by: str, now: datetime) -> bool:
    """Put a failed or blocked request back to `pending`, due now, its attempt counters
    reset, from `resume_step`; audited with who asked (`by`). Not committed here.

    Guarded on the status it was read with: of two operators retrying at once, one
    requeues it. False if it was no longer failed or blocked. A blocked request's
    dead-lettered notices get a fresh set of attempts too (as `retry-dead` does).
    """
    if row.status not in RETRYABLE:
        return False
    changed = session.execute(
        update(ErasureRequest)
        .where(ErasureRequest.id == row.id, ErasureRequest.status == row.status)
        .values(
            status=RequestStatus.PENDING,
            step=resume_step(row),
            attempts=0,
            verify_failures=0,
            next_run_at=now,
            lease_owner=None,
            lease_until=None,
            last_error=None,
            findings=None,
            # It runs again: nothing is "unreadable everywhere" until it has finished.
            copies_unreadable_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) != 1:
        return False
    if row.status == RequestStatus.BLOCKED:
        for delivery in session.scalars(
            select(DownstreamDelivery).where(
                DownstreamDelivery.request_id == row.id, DownstreamDelivery.dead_at.is_not(None)
            )
        ):
            delivery.dead_at = None
            delivery.attempts = 0
            delivery.next_attempt_at = now
    record(
        session,
        tag=AuditTag.ERASURE_RETRIED,
        actor=by[:80],
        now=now,
        household_id=row.household_id,
        subject=f"erasure:{row.id}",
    )
    return True


def retry(engine: ErasureEngine, request_id: uuid.UUID, *, by: str) -> ErasureRequest:
    """Run a failed or blocked request again once its fault is fixed; the request as
    it now stands (pending, due now). Refused for any other request (`409
    erasure_not_retryable`) and for an unknown id (`404 erasure_not_found`)."""
    now = engine.clock.now()
    with engine.stores.session() as session:
        row = session.get(ErasureRequest, request_id)
        if row is None:
            raise NotFound("No such erasure request.", code="erasure_not_found")
        if not requeue(session, row, by=by, now=now):
            raise Conflict(
                f"This erasure request is {row.status}: only a failed or blocked request "
                "is run again.",
                code="erasure_not_retryable",
            )
        engine.wakeup.announce(session)  # a worker runs it at once (wake.py)
        session.commit()
        engine.wakeup.local()
        session.refresh(row)
        return row


def reopen(
    session: Session, *, subject: str, asked: str, by: str, now: datetime
) -> ErasureRequest | None:
    """A new request meets the open requests for the same subject: each failed one is
    requeued (so a household whose closure failed can be asked for again even though
    its rows are gone), and the open request with the same subject digest, if any, is
    the answer. Its deadline stays that of the first request (S7, S8).

    An `items` scope "up to now" names a later end each time, so its subject differs
    from an earlier one's: the earlier failed request (same scope as asked) is requeued
    and a new request covers what came since. Not committed here.
    """
    rows = session.scalars(
        select(ErasureRequest)
        .where(
            ErasureRequest.status.in_(OPEN),
            or_(ErasureRequest.subject_digest == subject, ErasureRequest.asked_digest == asked),
        )
        .order_by(ErasureRequest.requested_at)
    ).all()
    answer = None
    for row in rows:
        if row.status == RequestStatus.FAILED:
            requeue(session, row, by=by, now=now)
        if row.subject_digest == subject and answer is None:
            answer = row
    return answer
