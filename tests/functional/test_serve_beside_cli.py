"""The embedded store shared by a served process and the CLI beside it (A8, C1, S6).

SQLite's locks are POSIX advisory locks: a process that closes any descriptor of a live
database file loses every lock its connections hold on it, and the next process to close
its last connection then thinks it is the last user and deletes the write-ahead log and
the shared-memory index under the others ("How To Corrupt An SQLite Database File",
§2.2). The raw scan of the remnant check must therefore never read the live files inside
the served process. Here `tutela serve` completes erasures, each with its raw scan, while
CLI commands run beside it round after round.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import use_home
from tests.factories import PASSWORD, device_token, make_home
from tests.mailbox import sign_in_served
from tutela.container import build
from tutela.db import migrate
from tutela.erasure.models import ErasureRequest
from tutela.settings import Settings
from tutela.vault.models import MediaItem

ROUNDS = 20
# Every other round `erasure list`, which must show every request the server accepted.
CLI_COMMANDS = (
    ("erasure", "list"),
    ("erasure", "list", "--open"),
    ("erasure", "list"),
    ("retention", "check"),
    ("erasure", "list"),
    ("erasure", "dead-letters"),
    ("erasure", "list"),
    ("retention", "run", "--dry-run"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _served(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = _free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tutela", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("tutela serve did not start")
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _deleted_store_files(pid: int) -> list[str]:
    """Files of the stores that the process still has open although they were deleted."""
    gone = []
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.endswith(" (deleted)") and (".db" in target):
            gone.append(Path(target.removesuffix(" (deleted)")).name)
    return sorted(set(gone))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tutela", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
def test_cli_commands_beside_a_served_process_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round after round the server answers, completes an erasure with its raw scan, and a
    CLI command runs beside it: afterwards no write-ahead log or shared-memory file was
    deleted under the server, no request answered 500, and every write the server
    acknowledged is there, seen by the CLI during the run and in the files after it."""
    use_home(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS", "false")
    settings = Settings()
    assert settings.erasure_raw_scan and settings.embedded_worker
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    home = make_home(container, tag="beside")
    phone = device_token(home, container, "phone")
    child = home.child_profiles[0]
    container.close()
    env = {**os.environ, "TUTELA_LOG_LEVEL": "WARNING"}

    statuses: list[tuple[str, int]] = []
    deleted: dict[int, list[str]] = {}
    unseen: dict[int, set[str]] = {}
    unreadable: list[str] = []
    kept: list[str] = []
    erased: list[str] = []
    requests: list[str] = []

    def call(client: httpx.Client, method: str, url: str, **kw: object) -> httpx.Response:
        r = client.request(method, url, **kw)  # type: ignore[arg-type]
        statuses.append((f"{method} {url.split('?', maxsplit=1)[0]}", r.status_code))
        return r

    def locations(client: httpx.Client, n: int) -> str:
        at = datetime.now(UTC) - timedelta(minutes=5)
        r = call(
            client,
            "POST",
            "/api/v1/ingest/locations",
            json={
                "profile_id": str(child),
                "points": [
                    {"latitude": 45 + n / 100, "longitude": 7.6, "captured_at": at.isoformat()}
                ],
            },
            headers={"authorization": f"Bearer {phone}"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    with (
        _served(env, tmp_path / "serve.log") as (base, pid),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        r = sign_in_served(base, next(iter(home.accounts)), PASSWORD, settings.mail_path)
        assert r.status_code == 201, r.text
        auth = {"authorization": f"Bearer {r.json()['token']}"}
        for n in range(ROUNDS):
            kept.append(locations(client, 2 * n))
            doomed = locations(client, 2 * n + 1)
            r = call(
                client,
                "POST",
                "/api/v1/erasures",
                json={"scope": "item", "item_id": doomed},
                headers={**auth, "idempotency-key": uuid.uuid4().hex},
            )
            if r.status_code != 202:
                break
            requests.append(r.json()["id"])
            erased.append(doomed)
            command = CLI_COMMANDS[n % len(CLI_COMMANDS)]
            done = _cli(env, *command)
            assert done.returncode == 0, (command, done.stdout[-400:], done.stderr[-400:])
            if command == ("erasure", "list"):
                # Every request the server acknowledged is visible to the command.
                missing = set(requests) - set(done.stdout.split())
                if missing:
                    unseen[n] = missing
            state: dict[str, object] = {}
            for _ in range(300):
                state = call(client, "GET", f"/api/v1/erasures/{requests[-1]}", headers=auth).json()
                if state.get("status") in ("completed", "failed"):
                    break
                time.sleep(0.1)
            assert state.get("status") == "completed", (n, state)
            if gone := _deleted_store_files(pid):
                deleted[n] = gone
            r = call(client, "GET", f"/api/v1/items/{kept[-1]}", headers=auth)
            if r.status_code != 200:
                unreadable.append(kept[-1])
            if r.status_code >= 500:
                break
        server_errors = [s for s in statuses if s[1] >= 500]

    # After the server stopped: the files hold every acknowledged write.
    container = build(Settings())
    try:
        with container.stores.session() as s:
            stored = {
                str(i)
                for i in s.scalars(
                    select(MediaItem.id).where(MediaItem.household_id == home.household_id)
                )
            }
            completed = {str(row.id): row.status for row in s.scalars(select(ErasureRequest))}
    finally:
        container.close()
    problems = {
        "store files deleted under the server, by round": deleted,
        "answers 500": server_errors[:5],
        "acknowledged requests the CLI could not see, by round": unseen,
        "acknowledged uploads the server could not read": unreadable,
        "rounds not run": ROUNDS - len(requests),
        "acknowledged uploads lost": sorted(set(kept) - stored),
        "erased uploads still stored": sorted(set(erased) & stored),
        "acknowledged requests lost or not complete": [
            r for r in requests if completed.get(r) != "completed"
        ],
    }
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
