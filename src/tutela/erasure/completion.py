"""The erasure steps that finish a job: downstream notices, tombstones, the remnant check
and the signed receipt (A8, S7, S8)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tutela.audit.service import AuditTag
from tutela.core.clock import as_utc
from tutela.db.engine import purge_journal
from tutela.erasure import announce, copies, receipts, remnants, steps
from tutela.erasure import downstream as consumers
from tutela.erasure.jobs import MAX_VERIFY_FAILURES, Job, chunks
from tutela.erasure.models import ErasureRequest, RequestStatus, ScopeKind, Step, Tombstone
from tutela.erasure.scope import digests

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine

log = logging.getLogger("tutela.erasure")


def downstream(engine: ErasureEngine, job: Job) -> str:
    scope, now = job.scope, engine.clock.now()
    profile_ids = [uuid.UUID(p) for p in job.fp.profile_ids]
    if scope.household_id is not None:
        homes = {scope.household_id: [uuid.UUID(i) for i in job.fp.item_ids]}
    else:  # a batch: each household's items apart
        homes = job.fp.by_household()
    for hook in engine.lineage_hooks:
        for household_id, item_ids in homes.items():
            hook.erased(
                request_id=job.row.id,
                household_id=household_id,
                profile_ids=profile_ids,
                item_ids=item_ids,
            )
    payload: dict[str, Any] = {
        "type": "tutela.erasure",
        "request_id": str(job.row.id),
        "scope": scope.kind.value,
        "household_id": str(scope.household_id) if scope.household_id else None,
        "profile_ids": job.fp.profile_ids,
        "item_ids": job.fp.item_ids,
    }
    if scope.household_id is None:
        payload["households"] = {str(h): [str(i) for i in ids] for h, ids in homes.items()}
    with engine.stores.session() as session:
        consumers.enqueue(session, engine.keys, request_id=job.row.id, payload=payload, now=now)
    consumers.deliver_due(engine.stores, engine.keys, engine.sender, now=now, request_id=job.row.id)
    with engine.stores.session() as session:
        state = consumers.pending(session, request_id=job.row.id)
    if state.dead:
        engine.leases.release(job, status=RequestStatus.BLOCKED, error="downstream_dead_letter")
        return RequestStatus.BLOCKED
    if state.waiting:
        wait = (state.next_attempt_at or now) - now
        engine.leases.release(job, delay=max(wait, timedelta(seconds=1)))
        return "wait"
    return "next"


def tombstones(engine: ErasureEngine, job: Job) -> str:
    now, scope = engine.clock.now(), job.scope
    rows: dict[tuple[str, str], None] = {}
    kinds = [("item", job.fp.item_ids), ("profile", job.fp.profile_ids)]
    if scope.kind is ScopeKind.HOUSEHOLD:
        kinds += [("household", job.fp.subject_ids), ("account", job.fp.account_ids)]
    for kind, values in kinds:
        for d in digests(engine.keys, kind, [uuid.UUID(v) for v in values], now=now):
            rows[(kind, d)] = None
    stones = [
        {"subject_kind": k, "subject_digest": d, "request_id": job.row.id, "erased_at": now}
        for k, d in rows
    ]
    insert = pg_insert if engine.stores.keys.dialect.name == "postgresql" else sqlite_insert
    with engine.stores.key_sessions() as ks:
        for part in chunks(stones, 1000):
            # executemany: the driver batches the rows (no 1,000-row statement to compile).
            ks.execute(insert(Tombstone).on_conflict_do_nothing(), list(part))
        ks.commit()
    return "next"


def verify(engine: ErasureEngine, job: Job) -> str:
    """The remnant check of one job, and its outcome (`verify_all` of one)."""
    return verify_all(engine, [job])[0]


def verify_all(engine: ErasureEngine, jobs: list[Job]) -> list[str]:
    """The last step of several jobs at once (a worker pass's jobs that reached it): one
    remnant check (`remnants.check_all`: the raw bytes read once for all of them), then
    each job's own outcome and receipt, in job order. "again" for a job whose scope grew
    (its steps run again from `keys`)."""
    outcomes: dict[int, str] = {}
    checked: list[Job] = []
    for k, job in enumerate(jobs):
        if steps.grew(engine, job):
            outcomes[k] = "again"
        else:
            _before_check(engine, job)
            checked.append(job)
    results = iter(remnants.check_all(engine, checked) if checked else [])
    for k, job in enumerate(jobs):
        if k not in outcomes:
            outcomes[k] = _conclude(engine, job, next(results))
    return [outcomes[k] for k in range(len(jobs))]


def _before_check(engine: ErasureEngine, job: Job) -> None:
    """A closed household's own request stops naming it and its adults before the check
    looks for them."""
    if job.scope.kind is ScopeKind.HOUSEHOLD:
        with engine.stores.session() as session:
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


def _conclude(engine: ErasureEngine, job: Job, result: remnants.Result) -> str:
    now = engine.clock.now()  # the check can take seconds: the receipt says when it ended
    if not result.clean:
        failures = job.row.verify_failures + 1
        findings = json.dumps([f.__dict__ for f in result.findings], sort_keys=True)
        log.warning("remnant check found %d remnants", sum(f.count for f in result.findings))
        if failures >= MAX_VERIFY_FAILURES:
            failed = engine.leases.fail(
                job, error="remnants_found", findings=findings, verify_failures=failures
            )
            return RequestStatus.FAILED if failed else "lost"
        job.row.verify_failures = failures
        engine.leases.advance(
            job,
            Step.VERIFY,
            Step.KEYS,
            findings=findings,
            verify_failures=failures,
            copies_unreadable_at=None,  # something was found: claim nothing until keys again
        )
        engine.leases.release(job, delay=timedelta(seconds=5 * failures))
        return "wait"
    times = json.loads(job.row.step_times or "{}")
    times[Step.VERIFY.value] = now.isoformat()
    # The check is clean: what the receipt says is verified as of now.
    unreadable = dataclasses.replace(
        copies.of_request(engine.keys, job.row), status=RequestStatus.COMPLETED
    )
    body = _receipt_body(engine, job, times, result, unreadable, now)
    receipt = receipts.sign_receipt(engine.keys, body, now=now)
    done = engine.leases.advance(
        job,
        Step.VERIFY,
        Step.DONE,
        step_times=json.dumps(times, sort_keys=True),
        copies_unreadable_at=unreadable.every_copy_at,
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
    with engine.stores.session() as session:
        # After the receipt: a notice queued before it would be one more thing to check.
        if announce.tell_completed(
            session, engine.keys, request=job.row, origin=engine.settings.origin, now=now
        ):
            session.commit()
    purge_journal(engine.stores.main)
    return "done"


def _subjects(job: Job, salt: bytes) -> dict[str, Any]:
    """A batch's counts per subject, each under sha256(salt || profile id text): a
    customer who knows their profile's id finds their own line, and nobody else can
    tell whose a line is (A8, C9)."""
    if job.scope.kind is not ScopeKind.BATCH:
        return {}
    return {
        "subjects": {
            hashlib.sha256(salt + profile.encode()).hexdigest(): dict(sorted(counts.items()))
            for profile, counts in sorted(job.fp.subjects.items())
        }
    }


def _receipt_body(
    engine: ErasureEngine,
    job: Job,
    times: dict[str, str],
    result: remnants.Result,
    unreadable: copies.Unreadable,
    now: datetime,
) -> dict[str, Any]:
    scope = job.scope
    subject_kind, subject_id = scope.subject()
    salt = secrets.token_bytes(16)
    return {
        "request_id": str(job.row.id),
        "issuer": engine.settings.origin,
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
        **_subjects(job, salt),
        "steps": times,
        "remnant_check": {
            # Clean in the live stores: no row, blob, key or notice left, and in the
            # raw bytes the check can read.
            "result": "clean",
            "at": now.isoformat(),
            "stores": result.stores,
            # Older row versions the check saw but cannot remove (PostgreSQL's dead tuples
            # and free space), by store; None where it could not look.
            "stale_copies": result.stale_copies,
        },
        "unreadable": unreadable.to_json(),
        "requested_at": as_utc(job.row.requested_at).isoformat(),
        "confirmed_at": as_utc(job.row.confirmed_at).isoformat() if job.row.confirmed_at else None,
        "complete_by": as_utc(job.row.complete_by).isoformat(),
        "completed_at": now.isoformat(),
        "deadline_met": now <= as_utc(job.row.complete_by),
    }
