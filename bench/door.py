"""Benchmark of a sign-in refused by the sign-in door, against one argon2id verification.

Run as `.venv/bin/python bench/door.py [--quick] [--redis-url redis://127.0.0.1:6379/0]
[--profile]`. It makes a fresh TUTELA_HOME with the embedded store (migrated, as
`tutela db upgrade` does), builds Tutela's ASGI app with the default settings (argon2id
parameters from `Settings`, reported) and slows one source down with failures. Then, in
this one process, on one event loop:

* refused: a POST of a JSON sign-in to `/api/v1/auth/token` from that source, sent
  straight into the app as ASGI messages (no sockets, no HTTP parser): every middleware
  of `create_app` (request log, host check, body limit, the door) and the door's 429
  problem+json with Retry-After. Once with the throttle in memory (the embedded mode) and,
  when Redis answers, once with it in Redis (under a prefix of its own, deleted at the
  end). Redis's own CPU is not in this process's figure; the wall-clock time, which holds
  the round trip, is reported beside it;
* baseline: one argon2id verification with the project's hasher and the settings'
  parameters (`PasswordHasher.verify` of a right password).

Times are CPU seconds of this process (`time.process_time`), the least of five rounds; the
least wall-clock time is reported beside each. Goal (the issue's): a refused attempt costs
< 5% of one argon2id verification, in the same run, in every store measured. The HTTP
server's own cost (uvicorn's parsing and writing) is not here; `bench/stuffing.py`
measures the whole server. `--profile` prints where the Redis refusals' CPU goes.
The last line printed is one JSON object: bench, figures, baseline, ratio, goal, met.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from starlette.types import ASGIApp, Message

from refusal_bench import ROUNDS, argon2_verification, clear_redis, report
from tutela.app import create_app
from tutela.container import build
from tutela.db import migrate
from tutela.identity.throttle import Attempt, RedisThrottle, Throttle, ThrottlePolicy
from tutela.settings import Settings

SOURCE = "203.0.113.77"
BODY = b'{"email":"someone@example.com","password":"a leaked password"}'


def slow_down(throttle: Throttle, settings: Settings) -> None:
    """Enough failures from SOURCE that it waits for the whole run (minutes of delay)."""
    now = time.time()
    for n in range(settings.signin_source_free_failures + 12):
        throttle.record_failure(Attempt(f"a:{n:040x}", SOURCE), now)


def scope_of(host: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/auth/token",
        "raw_path": b"/api/v1/auth/token",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", host),
            (b"user-agent", b"python-httpx/0.28"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": (SOURCE, 50123),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def refusals(app: ASGIApp, host: bytes, count: int) -> tuple[float, float]:
    """(CPU, wall) seconds per refused request, the least of ROUNDS rounds of `count`."""
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one() -> None:
        await app(scope_of(host), receive, send)

    await one()
    if statuses != [429]:
        raise AssertionError(f"the door did not refuse: {statuses}")
    cpu, wall = [], []
    for _ in range(ROUNDS):
        statuses.clear()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            await one()
        cpu.append((time.process_time() - c0) / count)
        wall.append((time.perf_counter() - w0) / count)
        if set(statuses) != {429}:
            raise AssertionError(f"not every request was refused: {set(statuses)}")
    return min(cpu), min(wall)


def measure(settings: Settings, throttle: Throttle | None, count: int, profile: bool) -> Any:
    container = build(settings)
    try:
        if throttle is not None:
            container.throttle = throttle
            container.gate.throttle = throttle
        slow_down(container.throttle, settings)
        app = create_app(settings, container=container)
        host = settings.public_url.split("//", 1)[1].split("/", 1)[0].encode()
        result = asyncio.run(refusals(app, host, count))
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(refusals(app, host, count))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return result
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--profile", action="store_true", help="cProfile the Redis refusals")
    args = parser.parse_args()
    count, verifications = (1000, 5) if args.quick else (5000, 20)

    work = Path(tempfile.mkdtemp(prefix="tutela-bench-door-", dir="/tmp"))
    settings = Settings(environment="test", home=work, embedded_worker=False)
    figures: dict[str, Any] = {}
    prefix = f"tutela:bench:{uuid.uuid4().hex}:"
    client: redis.Redis | None = None
    try:
        migrate.upgrade(settings.main_url, settings.keys_url)
        argon_cpu, argon_wall = argon2_verification(settings, verifications)
        cpu, wall = measure(settings, None, count, profile=False)
        figures["refused_memory_cpu_ms"], figures["refused_memory_wall_ms"] = cpu * 1e3, wall * 1e3
        try:
            client = redis.Redis.from_url(
                args.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
            )
            client.ping()
        except redis.RedisError as exc:
            figures["redis"] = f"not measured: {type(exc).__name__}"
            client = None
        else:
            throttle = RedisThrottle(
                client,
                ThrottlePolicy.from_settings(settings),
                prefix=prefix + "throttle:",
                url=args.redis_url,
            )
            cpu, wall = measure(settings, throttle, count, profile=args.profile)
            figures["refused_redis_cpu_ms"], figures["refused_redis_wall_ms"] = (
                cpu * 1e3,
                wall * 1e3,
            )
        # Once more after the refusals, so a machine that got busier shows in the baseline.
        again_cpu, again_wall = argon2_verification(settings, verifications)
    finally:
        if client is not None:
            clear_redis(client, prefix)
        shutil.rmtree(work, ignore_errors=True)

    report(
        "door",
        "refused by the door",
        quick=args.quick,
        settings=settings,
        figures=figures,
        argon=(argon_cpu, argon_wall),
        again=(again_cpu, again_wall),
    )


if __name__ == "__main__":
    main()
