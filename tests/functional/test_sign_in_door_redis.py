"""The sign-in door with its throttle in Redis: the read goes through the asyncio client on
the event loop, with the same answer as the memory throttle's (R6, S4)."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from tutela.app import create_app
from tutela.container import build
from tutela.core.clock import FakeClock
from tutela.identity.throttle import Attempt, RedisThrottle, ThrottlePolicy
from tutela.settings import Settings

REDIS_URL = os.environ.get("TUTELA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLOWED = "198.51.100.67"


def test_a_source_slowed_in_redis_is_refused_by_the_door(
    settings: Settings, clock: FakeClock
) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at TUTELA_TEST_REDIS_URL")
    prefix = f"tutela:test:{uuid.uuid4().hex}:"
    container = build(settings, clock=clock)
    throttle = RedisThrottle(
        client, ThrottlePolicy.from_settings(settings), prefix=prefix, url=REDIS_URL
    )
    container.throttle = container.gate.throttle = throttle
    try:
        now = clock.now().timestamp()
        for n in range(settings.signin_source_free_failures + 2):
            throttle.record_failure(Attempt(f"a:{n:040x}", SLOWED), now)
        app = create_app(container=container)
        # Two clients, two event loops: each gets a Redis client of its own loop.
        for _ in range(2):
            with TestClient(app, client=(SLOWED, 50000)) as slowed:
                r = slowed.post("/api/v1/auth/token", content=b"not json")
            assert r.status_code == 429
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["code"] == "too_many_attempts"
            assert r.json()["retry_after"] == pytest.approx(
                throttle.source_wait(SLOWED, now), abs=0.1
            )
    finally:
        container.close()
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
