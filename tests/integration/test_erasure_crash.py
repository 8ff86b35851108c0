"""A worker killed with SIGKILL after each step in turn; another worker then completes the job.

Every step is idempotent and recorded only after its work is done, so a job whose worker
died anywhere is finished by the next worker once the dead one's lease has run out, with
nothing left behind and a receipt that verifies (A5, A8, C1, S6).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.db.engine import make_engine
from tutela.erasure import pipeline, receipts
from tutela.erasure.jobs import MAX_VERIFY_FAILURES
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind, Step
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Profile
from tutela.settings import Settings
from tutela.vault.models import MediaItem

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")
STEPS = [s for s in Step if s is not Step.DONE]
SELF_RECORDED = (Step.MARK, Step.KEYS, Step.COLLECT, Step.DERIVED, Step.ROWS)
"""Steps that record their completion in the transaction of their own work."""

# A worker is a process of its own, killed with SIGKILL at a chosen point: right after a
# step's work and before that step is recorded (the engine's `after_step` hook), inside
# verify, or as an outcome's audit event is written. Importing Tutela takes seconds, so
# one launcher process imports it once and forks a fresh worker for each kill: each worker
# builds the real container from the test's TUTELA_* variables (the same stores, the same
# master key file under the same home) and runs one worker pass.
_LAUNCHER = textwrap.dedent(
    """
    import json, os, signal, sys
    import psycopg, sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite
    import tutela.container, tutela.erasure.remnants, tutela.notices.service

    def worker(order):
        for name in [n for n in os.environ if n.startswith("TUTELA_")]:
            del os.environ[name]
        os.environ.update(order["env"])
        from tutela.erasure import remnants
        from tutela.settings import Settings

        container = tutela.container.build(Settings())
        target = order["step"]

        def die(*_):
            os.kill(os.getpid(), signal.SIGKILL)

        put_back = order.get("put_back")
        kill_after = target if order["where"] == "hook" else None

        def after_step(_id, step):
            if put_back and step == "tombstones" and not container.vault.blobs.exists(put_back[0]):
                # A copy that reappears: the remnant check must find it.
                container.vault.blobs.write(put_back[0], [bytes.fromhex(put_back[1])])
            if step == kill_after:
                die()

        container.erasure.after_step = after_step
        if order["where"].startswith("audit:"):
            # As the audit event of an outcome is written, before it commits.
            from tutela.erasure import lease as engine

            record, tag_to_kill = engine.record, order["where"][len("audit:"):]

            def killed_at_the_event(session, *, tag, **rest):
                if tag == tag_to_kill:
                    die()
                record(session, tag=tag, **rest)

            engine.record = killed_at_the_event
        elif order["where"] == "in-transaction":
            # Inside the step's own transaction, its completion written, not committed.
            advance = container.erasure.leases.advance

            def advanced_then_killed(job, done, following, **values):
                recorded = advance(job, done, following, **values)
                if done == target and values.get("session") is not None:
                    die()
                return recorded

            container.erasure.leases.advance = advanced_then_killed
        elif order["where"] == "remnant-check":
            # Inside verify: the remnant check has run, its outcome is not recorded yet.
            check = remnants.check_all

            def checked_then_killed(engine, jobs):
                check(engine, jobs)
                die()

            remnants.check_all = checked_then_killed
        container.erasure.run_pending()
        print("the worker was not killed", file=sys.stderr, flush=True)

    print("ready", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                worker(order)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        print(json.dumps({"signal": signalled}), flush=True)
    """
)


def _until_its_transactions_end(url: str, *, seconds: float = 15.0) -> None:
    """PostgreSQL rolls a killed worker's transaction back (and frees its row locks) only
    once it notices the connection closed; until then a claim with SKIP LOCKED passes the
    job by, as it should. Wait for that moment, so the next pass sees what a real worker
    would see a little later. (SQLite's lock goes with the process.)"""
    if not url.startswith("postgresql"):
        return
    engine = make_engine(url)
    deadline = time.monotonic() + seconds
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                open_elsewhere = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                    )
                ).scalar_one()
                conn.rollback()
                if not open_elsewhere:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()


class Launcher:
    """Starts worker processes on the test's stores and reports how each one ended."""

    def __init__(self, folder: Path) -> None:
        self.errors = folder / "workers.stderr"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUTELA_")}
        with self.errors.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self._answer() == "ready", self.errors.read_text()[-3000:]

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def run_killed(
        self,
        settings: Settings,
        step: str,
        where: str = "hook",
        put_back: tuple[str, bytes] | None = None,
    ) -> None:
        """Run a worker pass in a new process that is killed after `step` (`where` is
        "hook"), inside verify ("remnant-check") or as it records an audit event
        ("audit:<tag>"). `put_back` is a blob (key, bytes) that reappears after each
        erasure of it, so the remnant check fails."""
        assert settings.database_url is not None and settings.keystore_url is not None
        env = {
            "TUTELA_ENVIRONMENT": "test",
            # No TUTELA_MASTER_KEY: the worker reads <home>/master.key, as the test does.
            "TUTELA_HOME": str(settings.home),
            "TUTELA_DATABASE_URL": settings.database_url,
            "TUTELA_KEYSTORE_URL": settings.keystore_url,
        }
        assert self.proc.stdin is not None
        order = {"env": env, "step": step, "where": where}
        if put_back is not None:
            order["put_back"] = [put_back[0], put_back[1].hex()]
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        assert answer, self.errors.read_text()[-3000:]
        ended = json.loads(answer)
        assert ended["signal"] == signal.SIGKILL, self.errors.read_text()[-3000:]
        _until_its_transactions_end(settings.database_url)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    started = Launcher(tmp_path_factory.mktemp("launcher"))
    yield started
    started.close()


def _row(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def _seeded_request(
    container: Container, tag: str
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, dict[str, int], list[uuid.UUID]]:
    """A home with a child's media and a pending erasure of that child's profile."""
    home = make_home(container, tag=tag)
    child = home.child_profiles[0]
    made = seed_media(container, home)
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, home.household_id, profile_id=child), GUARDIAN
    )
    counts = {kind: len(ids) for kind, ids in made.items() if ids} | {"profiles": 1}
    items = [i for ids in made.values() for i in ids]
    return row.id, home.household_id, child, counts, items


def _assert_erased_with_a_valid_receipt(
    container: Container,
    request_id: uuid.UUID,
    household_id: uuid.UUID,
    child: uuid.UUID,
    counts: dict[str, int],
    items: list[uuid.UUID],
) -> None:
    done = _row(container, request_id)
    assert done.status == "completed", (done.status, done.step, done.last_error, done.findings)
    with container.stores.session() as s:
        assert s.get(Profile, (household_id, child)) is None
        assert not s.scalars(select(MediaItem.id).where(MediaItem.profile_id == child)).all()
    keys = container.vault.keys
    assert keys.remaining_keys(household_id=household_id, profile_ids=[child]) == 0
    for item_id in items:
        with pytest.raises(KeyUnavailable):
            keys.item_key(household_id=household_id, item_id=item_id)
    assert list(container.vault.blobs.keys(f"{household_id}/{child}/")) == []
    public = receipts.signing_key(keys, now=container.clock.now()).public_key()
    body = receipts.verify(json.loads(done.receipt or "{}"), public)
    assert body["counts"] == counts
    assert body["remnant_check"]["result"] == "clean"
    assert body["scope"]["kind"] == "profile"
    assert set(body["steps"]) == {s.value for s in STEPS}
    assert done.scope_sealed is None and done.fingerprints_sealed is None
    with container.stores.session() as s:
        completions = s.scalars(
            select(AuditEvent.id).where(
                AuditEvent.tag == "erasure:request:complete",
                AuditEvent.subject == f"erasure:{request_id}",
            )
        ).all()
    assert len(completions) == 1


@pytest.mark.parametrize("step", [s.value for s in STEPS])
def test_a_worker_killed_after_a_step_leaves_a_job_the_next_worker_completes(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher, step: str
) -> None:
    request_id, household_id, child, counts, items = _seeded_request(container, f"kill{step}")

    launcher.run_killed(settings, step)

    stopped = _row(container, request_id)
    if step == Step.VERIFY:
        # The verify step records the completion itself; the hook runs after that.
        assert stopped.status == "completed"
    elif step in SELF_RECORDED:
        # Recorded with its own work: the next worker goes on from the step after it.
        assert stopped.status == "running"
        assert stopped.step == pipeline.following(Step(step))
    else:
        assert stopped.status == "running"
        assert stopped.step == step, "the killed step must not be recorded as done"
        assert stopped.receipt is None and stopped.completed_at is None
    # From the keys step on, the child is unreadable, whoever finishes the job (S6): its
    # profile key is gone, and with it every item key (their rows go at `rows`).
    keys = container.vault.keys
    if step == Step.MARK:
        assert keys.profile_key(household_id=household_id, profile_id=child)
    else:
        with pytest.raises(KeyUnavailable):
            keys.profile_key(household_id=household_id, profile_id=child)
        for item_id in items:
            with pytest.raises(KeyUnavailable):
                keys.item_key(household_id=household_id, item_id=item_id)

    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    report = container.erasure.run_pending()
    assert report.completed == (0 if step == Step.VERIFY else 1)
    _assert_erased_with_a_valid_receipt(container, request_id, household_id, child, counts, items)


@pytest.mark.parametrize("step", [s.value for s in SELF_RECORDED])
def test_a_worker_killed_inside_a_steps_transaction_leaves_neither_work_nor_record(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher, step: str
) -> None:
    """A step's work and the record of it commit together (A5, A8): killed in between,
    the step is still to do, and the next worker does it and completes the job."""
    request_id, household_id, child, counts, items = _seeded_request(container, f"tx{step}")
    if step != Step.MARK:
        container.erasure.run_request(request_id, until=pipeline.following(Step(step), back=1))
        clock.advance(timedelta(seconds=1))

    launcher.run_killed(settings, step, where="in-transaction")

    stopped = _row(container, request_id)
    assert (stopped.status, stopped.step) == ("running", step)
    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    assert container.erasure.run_pending().completed == 1
    _assert_erased_with_a_valid_receipt(container, request_id, household_id, child, counts, items)


def test_a_worker_killed_inside_verify_before_it_records_the_outcome(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher
) -> None:
    """The one point the step hook cannot reach: after the remnant check, before the
    completion and its receipt are written."""
    request_id, household_id, child, counts, items = _seeded_request(container, "killcheck")

    launcher.run_killed(settings, Step.VERIFY, where="remnant-check")

    stopped = _row(container, request_id)
    assert (stopped.status, stopped.step) == ("running", "verify")
    assert stopped.receipt is None
    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    assert container.erasure.run_pending().completed == 1
    _assert_erased_with_a_valid_receipt(container, request_id, household_id, child, counts, items)


def test_a_second_worker_leaves_a_job_alone_while_the_first_one_holds_its_lease(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher
) -> None:
    request_id, household_id, child, counts, items = _seeded_request(container, "lease")

    launcher.run_killed(settings, Step.BLOBS)

    # The dead worker's lease runs for `erasure_lease_seconds` from its own clock.
    clock.advance(timedelta(seconds=1))
    report = container.erasure.run_pending()
    assert (report.completed, report.advanced, report.waiting, report.failed) == (0, 0, 0, 0)
    assert container.erasure.run_request(request_id) is None
    held = _row(container, request_id)
    assert (held.status, held.step) == ("running", "blobs")
    assert held.lease_owner is not None and held.lease_owner != container.erasure.worker_id

    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    assert container.erasure.run_pending().completed == 1
    _assert_erased_with_a_valid_receipt(container, request_id, household_id, child, counts, items)


def test_a_worker_killed_right_after_the_completion_leaves_it_audited(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher
) -> None:
    """Habit 6 of STYLE.md: the completion and its audit event commit together, so no
    completed erasure lacks its `erasure:request:complete` event, however a worker dies."""
    request_id, household_id, child, counts, items = _seeded_request(container, "killaudit")

    launcher.run_killed(settings, Step.VERIFY, where="audit:erasure:request:complete")

    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    container.erasure.run_pending()
    _assert_erased_with_a_valid_receipt(container, request_id, household_id, child, counts, items)


def test_a_worker_killed_as_it_fails_a_request_leaves_it_audited(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher
) -> None:
    """A request the remnant check keeps failing is marked failed for an operator to look
    at; that outcome and its `erasure:request:fail` event commit together."""
    home = make_home(container, tag="killfail")
    voice = seed_media(container, home, clips=0)["voice"][0]
    with container.stores.session() as s:
        item = s.get(MediaItem, (home.household_id, voice))
        assert item is not None and item.blob_key is not None
        blob_key = item.blob_key
    copy = container.vault.blobs.read_at(blob_key, 0, container.vault.blobs.size(blob_key))

    def put_back(_request_id: uuid.UUID, step: Step) -> None:
        if step is Step.TOMBSTONES and not container.vault.blobs.exists(blob_key):
            container.vault.blobs.write(blob_key, [copy])

    container.erasure.after_step = put_back
    row = container.erasure.request(
        Scope(ScopeKind.ITEM, home.household_id, item_id=voice), GUARDIAN
    )
    for _ in range(MAX_VERIFY_FAILURES - 1):
        container.erasure.run_pending()
        clock.advance(timedelta(minutes=1))
    assert _row(container, row.id).verify_failures == MAX_VERIFY_FAILURES - 1
    with container.stores.session() as s:
        # The killed worker's clock is the real one, behind the test's by now.
        s.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == row.id)
            .values(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        s.commit()

    launcher.run_killed(settings, "", where="audit:erasure:request:fail", put_back=(blob_key, copy))

    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    container.erasure.run_pending()
    failed = _row(container, row.id)
    assert failed.status == "failed" and failed.receipt is None
    with container.stores.session() as s:
        events = s.scalars(
            select(AuditEvent.id).where(
                AuditEvent.tag == "erasure:request:fail",
                AuditEvent.subject == f"erasure:{row.id}",
            )
        ).all()
    assert len(events) == 1


BATCH_STEPS = [s.value for s in STEPS if s is not Step.COLLECT]
"""A batch reads its items in `mark`: it has no `collect` step."""


@pytest.mark.parametrize("step", BATCH_STEPS)
def test_a_worker_killed_after_a_step_of_a_batch_job_leaves_it_to_the_next_worker(
    container: Container, settings: Settings, clock: FakeClock, launcher: Launcher, step: str
) -> None:
    """A batch across two households (a sweep's, A6, C9), the worker killed after each
    step in turn: another worker completes it, with one receipt and nothing left."""
    from tutela.erasure.scope import Member

    homes = [make_home(container, tag=f"b{step}{n}") for n in range(2)]
    made = [seed_media(container, home, voices=2, clips=0) for home in homes]
    members = [
        Member(home.household_id, home.child_profiles[0], voice)
        for home, items in zip(homes, made, strict=True)
        for voice in items["voice"]
    ]
    sweep = Requester(RequesterKind.RETENTION, "rule:retention")
    (request_id,) = container.erasure.request_batch(members, sweep).requests

    launcher.run_killed(settings, step)

    stopped = _row(container, request_id)
    if step == Step.VERIFY:
        assert stopped.status == "completed"
    else:
        assert stopped.status == "running" and stopped.receipt is None
    clock.advance(timedelta(seconds=settings.erasure_lease_seconds + 60))
    container.erasure.run_pending()
    done = _row(container, request_id)
    assert (done.status, done.step) == ("completed", "done"), (done.step, done.last_error)
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    body = receipts.verify(json.loads(done.receipt or "{}"), public)
    assert body["counts"] == {"voice": 4, "transcript": 4}
    assert len(body["subjects"]) == 2
    keys = container.vault.keys
    for home, items in zip(homes, made, strict=True):
        for item_id in items["voice"] + items["transcript"]:
            with pytest.raises(KeyUnavailable):
                keys.item_key(household_id=home.household_id, item_id=item_id)
        assert keys.item_key(household_id=home.household_id, item_id=items["location"][0])
    with container.stores.session() as s:
        completions = s.scalars(
            select(AuditEvent.id).where(
                AuditEvent.tag == "erasure:request:complete",
                AuditEvent.subject == f"erasure:{request_id}",
            )
        ).all()
    assert len(completions) == 1
