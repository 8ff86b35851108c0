"""The bench's own stores, Redis db and server process, and the argon2id baseline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type

from stuffing_common import (
    PG_SERVER,
    SERVER_WORKERS,
    free_port,
)

# On 2 shared cores under other load, two workers can take over a minute to start.
SERVER_START_S = 180.0

# --- the baseline of the CPU comparison: argon2id in this process -----------------------------


def argon2_cpu_ms(settings: Any, rounds: int) -> float:
    """CPU milliseconds of one argon2id verification with the server's parameters."""
    hasher = Argon2Hasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    stored = hasher.hash("bench-argon2-baseline")
    hasher.verify(stored, "bench-argon2-baseline")
    started = time.process_time()
    for _ in range(rounds):
        hasher.verify(stored, "bench-argon2-baseline")
    return (time.process_time() - started) * 1000 / rounds


# --- one store: set up, serve, measure, clean up ---------------------------------------------


@contextmanager
def databases(store: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_stuffing_{os.getpid()}", f"tutela_bench_stuffing_{os.getpid()}_keys"]
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "TUTELA_DATABASE_URL": PG_SERVER + names[0],
            "TUTELA_KEYSTORE_URL": PG_SERVER + names[1],
        }
    finally:
        with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def throttle_db(url: str) -> Iterator[redis.Redis]:
    """The bench's own Redis database, empty before and after."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0)
    client.ping()
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@contextmanager
def server(env: dict[str, str], work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`tutela serve --workers 2` in its own process group, killed (group-wide) at the end."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tutela"), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(SERVER_WORKERS)]
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {proc.returncode}:\n"
                    + (work / "server.log").read_text()
                )
            with suppress(httpx.HTTPError):
                if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer /healthz within {SERVER_START_S:.0f} s"
                )
            time.sleep(0.2)
        yield proc, base_url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
