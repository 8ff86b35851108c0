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
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from refusal_bench import argon2_verification, clear_redis, least, report
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.core.errors import SignInBusy
from tutela.db import migrate
from tutela.identity.admission import AdmissionPolicy, RedisAdmission
from tutela.identity.models import SessionKind
from tutela.identity.signin import Client
from tutela.identity.throttle import RedisThrottle, ThrottlePolicy
from tutela.settings import Settings


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
            clear_redis(redis_client, prefix)
        shutil.rmtree(work, ignore_errors=True)

    report(
        "admission",
        "refused",
        quick=args.quick,
        settings=settings,
        figures=figures,
        argon=(argon_cpu, argon_wall),
        again=(again_cpu, again_wall),
    )


if __name__ == "__main__":
    main()
