"""`tutela serve` at http://localhost:8000 by default, where passkeys work (R4).

Browsers refuse an IP address as WebAuthn's relying-party id, so the console is served at
a host name: `localhost`, which resolves to 127.0.0.1 or ::1, and both are listened on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import use_home
from tutela.db import migrate
from tutela.settings import Settings


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _port_free_on_both() -> int:
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not _has_ipv6_loopback():
            return port
        try:
            with socket.socket(socket.AF_INET6) as s6:
                s6.bind(("::1", port))
        except OSError:
            continue
        return port
    pytest.fail("no port free on both loopback addresses")


@contextmanager
def _serve(
    env: dict[str, str], port: int, *, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutela", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Worker processes are spawned and import the app: allow for a loaded machine.
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None:
                    assert proc.stderr is not None
                    pytest.fail("tutela serve exited: " + proc.stderr.read().decode())
                time.sleep(0.1)
        else:
            pytest.fail("tutela serve did not start")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def served_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    use_home(monkeypatch, tmp_path)
    settings = Settings()
    migrate.upgrade(settings.main_url, settings.keys_url)
    return {**os.environ, "TUTELA_LOG_LEVEL": "WARNING"}


def test_the_defaults_are_localhost_so_passkeys_can_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_home(monkeypatch, tmp_path)
    settings = Settings()
    assert settings.public_url == "http://localhost:8000"
    assert settings.rp_id == "localhost"
    assert settings.origin == "http://localhost:8000"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_at_localhost_and_both_loopback_addresses(
    served_env: dict[str, str], workers: int
) -> None:
    """Every worker process serves every address (the sockets are shared)."""
    port = _port_free_on_both()
    with _serve(served_env, port, workers=workers) as proc:
        for base in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
            r = httpx.get(base + "/login")
            assert r.status_code == 200, base
            assert "Sign in" in r.text
        if _has_ipv6_loopback():
            assert httpx.get(f"http://[::1]:{port}/healthz").status_code == 200
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        # The default relying-party id is a host name: no warning about it.
        assert "IP address" not in proc.stderr.read().decode()


def test_serve_warns_when_the_relying_party_id_is_an_ip_address(
    served_env: dict[str, str],
) -> None:
    port = _port_free_on_both()
    env = {**served_env, "TUTELA_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    with _serve(env, port) as proc:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert "relying-party id 127.0.0.1 is an IP address" in err
    assert "http://localhost:8000" in err
