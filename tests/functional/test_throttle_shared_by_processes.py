"""Two `tutela serve` processes behind one proxy share the sign-in throttle through Redis.

S4, R6: failures a source makes at one API process slow that source at every other one,
and only that source. The processes trust X-Forwarded-For from 127.0.0.1, as behind a
load balancer, so each request names its source.
Skipped when Redis is down, unless TUTELA_TEST_REDIS=required (then it fails).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import use_home
from tests.factories import PASSWORD, make_home
from tutela.container import build
from tutela.db import migrate
from tutela.settings import Settings

# A database of its own: the processes' keys are fixed ("tutela:throttle:..."), so it is
# emptied before and after.
REDIS_URL = os.environ.get("TUTELA_TEST_REDIS_THROTTLE_URL", "redis://127.0.0.1:6379/7")
ATTACKER = "198.51.100.9"
BYSTANDER = "203.0.113.40"


@pytest.fixture
def shared_redis() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("TUTELA_TEST_REDIS", "") == "required":
            pytest.fail("Redis is required (TUTELA_TEST_REDIS=required) but unreachable")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated embedded home with one household; the owner's email."""
    use_home(monkeypatch, tmp_path)
    settings = Settings()
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    try:
        home = make_home(container, tag="shared")
    finally:
        container.close()
    return next(iter(home.accounts))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tutela", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return proc, f"http://127.0.0.1:{port}"


def _wait_until_up(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    # Generous: a loaded machine takes seconds just to import the app.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tutela serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"tutela serve did not start:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _sign_in(base: str, email: str, password: str, source: str) -> httpx.Response:
    return httpx.post(
        base + "/api/v1/auth/token",
        json={"email": email, "password": password},
        headers={"x-forwarded-for": source},
        timeout=10,
    )


def test_failures_at_one_process_slow_that_source_at_the_other(
    shared_redis: str, embedded_home: str, tmp_path: Path
) -> None:
    """S4, R6: the source throttle is one for the whole deployment, per source."""
    env = {
        **os.environ,
        "TUTELA_REDIS_URL": shared_redis,
        "TUTELA_TRUSTED_PROXIES": '["127.0.0.1"]',
        "TUTELA_LOG_LEVEL": "WARNING",
    }
    email = embedded_home
    with ExitStack() as stack:
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        servers = [_start(env, log) for log in logs]
        for proc, _ in servers:
            stack.callback(_stop, proc)
        for (proc, base), log in zip(servers, logs, strict=True):
            _wait_until_up(proc, base, log)
        (_, a), (_, b) = servers

        for n in range(5):
            r = _sign_in(a, email, f"guess {n}", ATTACKER)
            assert r.status_code == 401, r.text
        # Past the five free failures the source waits 1 s, then 2 s after the next one:
        # one more failure leaves time enough to ask the other process.
        time.sleep(1.1)
        assert _sign_in(a, email, "guess 5", ATTACKER).status_code == 401

        slowed = _sign_in(b, email, PASSWORD, ATTACKER)
        assert slowed.status_code == 429, slowed.text
        assert int(slowed.headers["retry-after"]) >= 1
        other = _sign_in(b, email, "guess from elsewhere", BYSTANDER)
        assert other.status_code == 401, other.text
        assert other.json()["code"] == "invalid_credentials"
