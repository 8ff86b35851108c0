"""Running an erasure job: its steps in order, each a unit with the job in and an outcome
out (DESIGN idea 2; A5, A8, S6, S7).

A step returns what happened:
- `next`: done; the runner records it (`Leases.advance`) and goes on;
- `advanced`: done and already recorded in the step's own transaction;
- `again`: items joined the scope; back to `keys`;
- `wait`, `blocked`, `failed`: the job was given back (or given up) by the step;
- `done`: the last step recorded the completion;
- `lost`: this worker's lease is gone; another worker carries on.

A step that raises is given back to run again after a pause, and after
`MAX_STEP_ATTEMPTS` failures in a row the request fails (`Leases.fail`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from tutela.erasure import completion, removal, steps
from tutela.erasure.jobs import MAX_STEP_ATTEMPTS, Fingerprints, Job, Report
from tutela.erasure.models import ErasureRequest, RequestStatus, Step
from tutela.erasure.scope import Scope

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine

log = logging.getLogger("tutela.erasure")
StepFn = Callable[["ErasureEngine", Job], str]

STEP_FUNCTIONS: dict[Step, StepFn] = {
    Step.MARK: steps.mark,
    Step.KEYS: steps.destroy_keys,
    Step.COLLECT: steps.collect,
    Step.BLOBS: removal.blobs,
    Step.DERIVED: removal.derived,
    Step.ROWS: removal.rows,
    Step.DOWNSTREAM: completion.downstream,
    Step.TOMBSTONES: completion.tombstones,
    Step.VERIFY: completion.verify,
}
_STOPS = ("wait", "lost", RequestStatus.FAILED, RequestStatus.BLOCKED)


def following(step: Step, *, back: int = 0) -> Step:
    """The step after `step` (with `back=1`, the one before it)."""
    order = list(Step)
    return order[order.index(step) + (-1 if back else 1)]


def load(engine: ErasureEngine, request_id: uuid.UUID) -> Job:
    now = engine.clock.now()
    with engine.stores.session() as session:
        row = session.get(ErasureRequest, request_id)
        assert row is not None and row.scope_sealed is not None
        scope = Scope.from_json(json.loads(engine.open(row.scope_sealed, "scope", now=now)))
        fp = (
            Fingerprints.from_bytes(engine.open(row.fingerprints_sealed, "fp", now=now))
            if row.fingerprints_sealed
            else Fingerprints()
        )
        session.expunge(row)
    return Job(row=row, scope=scope, fp=fp)


def run(engine: ErasureEngine, request_id: uuid.UUID, *, until: Step | None = None) -> str:
    """Run a claimed job from its recorded step (up to `until`, inclusive)."""
    return _run(engine, load(engine, request_id), until=until)


def _run(
    engine: ErasureEngine,
    job: Job,
    *,
    until: Step | None = None,
    gather: list[Job] | None = None,
) -> str:
    """Run `job`'s steps in order. With `gather`, a job that reaches `verify` is added to
    it (its lease kept) and left there: the pass verifies its jobs together."""
    while True:
        step = Step(job.row.step)
        if step is Step.DONE:
            return RequestStatus.COMPLETED
        if gather is not None and step is Step.VERIFY:
            gather.append(job)
            return "gathered"
        try:
            outcome = engine.step_functions[step](engine, job)
        except Exception as exc:
            return _failed(engine, job, step, exc)
        if engine.after_step is not None:
            engine.after_step(job.row.id, step)
        if outcome == "done":
            return RequestStatus.COMPLETED
        if outcome in _STOPS:
            return outcome
        if outcome == "next":
            if not engine.leases.advance(job, step, following(step)):
                return "lost"
        elif outcome == "again":
            # Items joined the scope: nothing is "unreadable everywhere" until the new
            # keys' epoch is gone too.
            if not engine.leases.advance(job, step, Step.KEYS, copies_unreadable_at=None):
                return "lost"
        else:
            assert outcome == "advanced", outcome
        if Step(job.row.step) is Step.DONE:
            return RequestStatus.COMPLETED
        if until is not None and step is until:
            engine.leases.release(job)
            return "advanced"


def _failed(engine: ErasureEngine, job: Job, step: Step, exc: Exception) -> str:
    # Logged by class only: messages of store errors can quote data.
    log.warning("erasure step %s failed: %s", step.value, type(exc).__name__)
    if job.row.attempts >= MAX_STEP_ATTEMPTS:
        failed = engine.leases.fail(job, error=type(exc).__name__)
        return RequestStatus.FAILED if failed else "lost"
    engine.leases.release(job, error=type(exc).__name__, delay=timedelta(seconds=30))
    return "error"


def run_pending(engine: ErasureEngine, *, limit: int = 10) -> Report:
    """Claim and run due jobs, one after another, then verify together the ones that
    reached `verify`: one read of the raw bytes for the whole pass (A8 at scale)."""
    report = Report()
    gathered: list[Job] = []
    renewed = time.monotonic()
    for _ in range(limit):
        claimed = engine.leases.claim()
        if claimed is None:
            break
        _tally(report, _run(engine, load(engine, claimed), gather=gathered))
        if time.monotonic() - renewed > engine.leases.lease.total_seconds() / 4:
            # The gathered jobs wait for the pass's end: keep them ours meanwhile.
            gathered = [job for job in gathered if engine.leases.renew(job)]
            renewed = time.monotonic()
    if not gathered:
        return report
    try:
        outcomes = completion.verify_all(engine, gathered)
    except Exception as exc:
        for job in gathered:
            _tally(report, _failed(engine, job, Step.VERIFY, exc))
        return report
    for job, checked in zip(gathered, outcomes, strict=True):
        if engine.after_step is not None:
            engine.after_step(job.row.id, Step.VERIFY)
        ended = checked
        if checked == "again":
            moved = engine.leases.advance(job, Step.VERIFY, Step.KEYS, copies_unreadable_at=None)
            ended = _run(engine, job) if moved else "lost"
        _tally(report, RequestStatus.COMPLETED if ended == "done" else ended)
    return report


def _tally(report: Report, outcome: str) -> None:
    if outcome == "gathered":
        return
    if outcome == RequestStatus.COMPLETED:
        report.completed += 1
    elif outcome == RequestStatus.FAILED:
        report.failed += 1
    elif outcome == "wait":
        report.waiting += 1
    else:
        report.advanced += 1
