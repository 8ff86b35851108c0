"""Benchmark of a sign-in refused by admission (`sign_in_busy`), against one argon2id verification.

Run as `.venv/bin/python bench/admission.py [--quick] [--redis-url redis://127.0.0.1:6379/0]`.
It makes a fresh TUTELA_HOME with the embedded store (migrated, as `tutela db upgrade`
does), builds Tutela's container with the default settings (argon2id parameters from
`Settings`, reported), switches defended mode on and spends the global budget of hashes
for unknown devices. Then, in this one process:

* refused: `Gate.sign_in` for an unknown device (an address with no account, no device
  cookie, a new source each time so the throttle's source rule stays out of it) up to its
  `sign_in_busy` refusal: the throttle's check, the budget's script and the refusal, no
  account lookup and no hash. Once with the throttle and the budget in memory (the
  embedded mode) and, when Redis answers, once with both in Redis (under a prefix of
  their own, deleted at the end). Redis's own CPU is not in this process's figure; the
  wall-clock time, which holds the round trips, is reported beside it;
* baseline: one argon2id verification with the project's hasher and the settings'
  parameters (`PasswordHasher.verify` of a right password).

Times are CPU seconds of this process (`time.process_time`), the least of five rounds; the
least wall-clock time is reported beside each. Goal (the issue's): a refused attempt costs
< 5% of one argon2id verification, in the same run, in every store measured. The HTTP
stack's own cost per request is not here; `bench/stuffing.py` measures the whole server.
The last line printed is one JSON object: bench, figures, baseline, ratio, goal, met.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.core.errors import SignInBusy
from tutela.db import migrate
from tutela.identity.admission import AdmissionPolicy, RedisAdmission
from tutela.identity.models import SessionKind
from tutela.identity.passwords import PasswordHasher
from tutela.identity.signin import Client
from tutela.identity.throttle import RedisThrottle, ThrottlePolicy
from tutela.settings import Settings

GOAL_RATIO = 0.05
ROUNDS = 5


def least(run: Callable[[], None], count: int) -> tuple[float, float]:
    """(CPU, wall) seconds per call of `run`, the least of ROUNDS rounds of `count` calls."""
    cpu, wall = [], []
    for _ in range(ROUNDS):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            run()
        cpu.append((time.process_time() - c0) / count)
        wall.append((time.perf_counter() - w0) / count)
    return min(cpu), min(wall)


def argon2_verification(settings: Settings, count: int) -> tuple[float, float]:
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    stored = hasher.hash("bench-admission-baseline")
    hasher.verify(stored, "bench-admission-baseline")

    def verify() -> None:
        assert hasher.verify(stored, "bench-admission-baseline")

    return least(verify, count)


def refused_attempt(container: Container, count: int) -> tuple[float, float]:
    """Per-call cost of an unknown device's sign-in refused with `sign_in_busy`."""
    gate, clock = container.gate, container.clock
    gate.throttle.enter_defended(clock.now().timestamp())
    while gate.admission.take(clock.now().timestamp()) == 0.0:
        pass  # the attack spent the budget
    serial = iter(range(10_000_000))

    def attempt() -> None:
        n = next(serial)
        with container.stores.session() as session:
            try:
                gate.sign_in(
                    session,
                    email=f"stuffed{n}@example.com",
                    password="a leaked password",  # noqa: S106 - a stuffing list's
                    kind=SessionKind.API,
                    client=Client(address=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"),
                    now=clock.now(),
                )
            except SignInBusy:
                return
        raise AssertionError("the attempt was not refused by admission")

    attempt()  # warm: the throttle key, the key store's index key
    return least(attempt, count)


def use_redis(container: Container, url: str, prefix: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    client.ping()
    settings = container.settings
    container.gate.throttle = RedisThrottle(
        client, ThrottlePolicy.from_settings(settings), prefix=prefix + "throttle:"
    )
    container.gate.admission = RedisAdmission(
        client, AdmissionPolicy.from_settings(settings), prefix=prefix + "admission:"
    )
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    refusals, verifications = (300, 5) if args.quick else (2000, 20)

    work = Path(tempfile.mkdtemp(prefix="tutela-bench-admission-", dir="/tmp"))
    settings = Settings(environment="test", home=work, embedded_worker=False)
    figures: dict[str, Any] = {}
    prefix = f"tutela:bench:{uuid.uuid4().hex}:"
    redis_client: redis.Redis | None = None
    try:
        migrate.upgrade(settings.main_url, settings.keys_url)
        argon_cpu, argon_wall = argon2_verification(settings, verifications)
        # A clock that stands still: the spent budget does not refill during the rounds.
        container = build(settings, clock=FakeClock(datetime.now(UTC)))
        try:
            cpu, wall = refused_attempt(container, refusals)
            figures["refused_memory_cpu_ms"], figures["refused_memory_wall_ms"] = (
                cpu * 1e3,
                wall * 1e3,
            )
            try:
                redis_client = use_redis(container, args.redis_url, prefix)
            except redis.RedisError as exc:
                figures["redis"] = f"not measured: {type(exc).__name__}"
            else:
                cpu, wall = refused_attempt(container, refusals)
                figures["refused_redis_cpu_ms"], figures["refused_redis_wall_ms"] = (
                    cpu * 1e3,
                    wall * 1e3,
                )
        finally:
            container.close()
        # Once more after the refusals, so a machine that got busier shows in the baseline.
        again_cpu, again_wall = argon2_verification(settings, verifications)
    finally:
        if redis_client is not None:
            keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                redis_client.delete(*keys)
            redis_client.close()
        shutil.rmtree(work, ignore_errors=True)

    baseline = {
        "argon2_params": f"argon2id t={settings.argon2_time_cost},"
        f" m={settings.argon2_memory_kib} KiB, p={settings.argon2_parallelism}",
        "argon2_verify_cpu_ms": min(argon_cpu, again_cpu) * 1e3,
        "argon2_verify_wall_ms": min(argon_wall, again_wall) * 1e3,
    }
    stores = [s for s in ("memory", "redis") if f"refused_{s}_cpu_ms" in figures]
    ratios = {s: figures[f"refused_{s}_cpu_ms"] / baseline["argon2_verify_cpu_ms"] for s in stores}
    for store in stores:
        print(
            f"refused ({store}): {figures[f'refused_{store}_cpu_ms']:.3f} ms CPU"
            f" ({figures[f'refused_{store}_wall_ms']:.3f} ms wall);"
            f" {ratios[store]:.2%} of one argon2id verification"
        )
    print(
        f"argon2id verification ({baseline['argon2_params']}):"
        f" {baseline['argon2_verify_cpu_ms']:.1f} ms CPU"
        f" ({baseline['argon2_verify_wall_ms']:.1f} ms wall)"
    )
    ratio = max(ratios.values())
    report = {
        "bench": "admission",
        "quick": args.quick,
        "figures": {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
        "baseline": {k: round(v, 3) if isinstance(v, float) else v for k, v in baseline.items()},
        "ratio": round(ratio, 4),
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "goal": "< 5% of argon2id",
        "met": ratio < GOAL_RATIO,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
