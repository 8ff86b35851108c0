"""Erasure work starts when it arrives (A5, A8, S7): a new request wakes a worker at once,
the API process's own in embedded mode and, over PostgreSQL, a `tutela worker` process
elsewhere, even after its listening connection was cut. Polling is only the fallback:
here the workers poll once a minute, and every request completes long before that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.factories import seed_media
from tests.functional.conftest import owner_email
from tests.functional.test_erasure_api import erase, public_key, stepped_up
from tests.integration.test_erasure_wake_notify import listener_pids
from tutela.container import Container
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, RequestStatus, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households.service import CreatedHome
from tutela.settings import Settings

POLL = 60.0
PROMPTLY = 20.0
"""Seconds a woken worker may take on a busy test machine: well under a poll."""
RECORDINGS = 20
GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The API process runs its embedded worker, which polls once a minute."""
    return settings.model_copy(
        update={"embedded_worker": True, "embedded_worker_poll_seconds": POLL}
    )


def _voice_scope(home: CreatedHome) -> Scope:
    return Scope(
        ScopeKind.ITEMS, home.household_id, profile_id=home.child_profiles[0], kinds=("voice",)
    )


def _completed(container: Container, request_id: uuid.UUID) -> dict[str, object]:
    """The request's verified receipt, once it completed; fails after `PROMPTLY`."""
    deadline = time.monotonic() + PROMPTLY
    while time.monotonic() < deadline:
        with container.stores.session() as session:
            row = session.get(ErasureRequest, request_id)
            assert row is not None
        if row.status == RequestStatus.COMPLETED:
            public = receipts.signing_key(container.vault.keys, now=container.clock.now())
            return receipts.verify(json.loads(row.receipt or "{}"), public.public_key())
        assert row.status not in (RequestStatus.FAILED, RequestStatus.BLOCKED), row.status
        time.sleep(0.05)
    pytest.fail(f"not completed {PROMPTLY:.0f} s after the request: no worker was woken")


def test_a_parents_request_completes_with_its_receipt_without_waiting_for_a_poll(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    seed_media(container, home, voices=RECORDINGS, clips=0)
    headers = stepped_up(client, owner_email(home))
    r = erase(
        client, headers, scope="items", profile_id=str(home.child_profiles[0]), kinds=["voice"]
    )
    assert r.status_code == 202, r.text

    receipt = _completed(container, uuid.UUID(r.json()["id"]))
    assert receipt["counts"]["voice"] == RECORDINGS
    status = client.get(f"/api/v1/erasures/{r.json()['id']}", headers=headers).json()
    assert status["status"] == "completed"
    document = client.get(status["receipt_url"])
    assert receipts.verify(document.content, public_key(client))["request_id"] == r.json()["id"]


@pytest.mark.usefixtures("client")
def test_a_rules_request_wakes_the_embedded_worker_too(
    container: Container, home: CreatedHome
) -> None:
    """A rule's request runs no step before it is answered: the worker does them all."""
    voices = seed_media(container, home, voices=3, clips=0)["voice"]
    scope = Scope(
        ScopeKind.ITEMS,
        home.household_id,
        profile_id=home.child_profiles[0],
        item_ids=tuple(sorted(voices)),
    )
    row = container.erasure.request(scope, Requester(RequesterKind.RETENTION, "rule:test"))
    assert _completed(container, row.id)["counts"]["voice"] == 3


def _listening(container: Container, *, not_: set[int]) -> int:
    deadline = time.monotonic() + PROMPTLY
    while time.monotonic() < deadline:
        if fresh := listener_pids(container) - not_:
            return fresh.pop()
        time.sleep(0.05)
    pytest.fail("the worker is not listening")


@pytest.fixture
def worker(container: Container, backend: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`tutela worker` over the test's stores, polling once a minute, listening."""
    if backend != "postgresql":
        pytest.skip("over SQLite a request wakes only its own process; other processes poll")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTELA_")}
    settings = container.settings
    env.update(
        TUTELA_ENVIRONMENT="test",
        TUTELA_HOME=str(settings.home),
        TUTELA_DATABASE_URL=settings.main_url,
        TUTELA_KEYSTORE_URL=settings.keys_url,
        TUTELA_WORKER_POLL_SECONDS=str(POLL),
        TUTELA_LOG_LEVEL="WARNING",
    )
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tutela", "worker"], env=env, stdout=log, stderr=log
        )
    try:
        _listening(container, not_=set())
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_worker_process_is_woken_by_a_request_another_process_records(
    container: Container, home: CreatedHome, worker: subprocess.Popen[bytes]
) -> None:
    seed_media(container, home, voices=RECORDINGS, clips=0)
    # What the API does: the keys are gone before the answer, the rest is the worker's.
    row = container.erasure.start(_voice_scope(home), GUARDIAN)
    assert _completed(container, row.id)["counts"]["voice"] == RECORDINGS

    # A burst of rule requests, more than one pass takes: all done without a poll.
    rule = Requester(RequesterKind.RETENTION, "rule:test")
    burst = [
        container.erasure.request(Scope(ScopeKind.ITEM, home.household_id, item_id=voice), rule).id
        for voice in seed_media(container, home, voices=12, clips=0)["voice"]
    ]
    for request_id in burst:
        assert _completed(container, request_id)["counts"]["voice"] == 1

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=PROMPTLY) == 0  # it stops without waiting out its poll


def test_a_worker_whose_listening_connection_is_killed_is_still_woken(
    container: Container, home: CreatedHome, worker: subprocess.Popen[bytes]
) -> None:
    seed_media(container, home, voices=RECORDINGS, clips=0)
    (killed,) = listener_pids(container)
    with container.stores.main.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    _listening(container, not_={killed})

    row = container.erasure.start(_voice_scope(home), GUARDIAN)
    assert _completed(container, row.id)["counts"]["voice"] == RECORDINGS
    assert worker.poll() is None
