"""The test Redis, for the stores that keep their state there (S2 throttle, admission).

TUTELA_TEST_REDIS_URL chooses the server and database; TUTELA_TEST_REDIS=required makes
an unreachable one a failure rather than a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

REDIS_URL = os.environ.get("TUTELA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_REQUIRED = os.environ.get("TUTELA_TEST_REDIS", "") == "required"


@pytest.fixture(scope="session")
def redis_up() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        if REDIS_REQUIRED:
            pytest.fail("Redis is required (TUTELA_TEST_REDIS=required) but unreachable")
        return False
    return True


@contextmanager
def redis_space() -> Iterator[tuple[str, Callable[[], redis.Redis]]]:
    """A key prefix of its own and a way to open clients; at the end every key under the
    prefix is deleted and every client opened is closed."""
    prefix = f"tutela:test:{uuid.uuid4().hex}:"
    clients: list[redis.Redis] = []

    def connect() -> redis.Redis:
        client = redis.Redis.from_url(REDIS_URL)
        clients.append(client)
        return client

    yield prefix, connect
    cleaner = redis.Redis.from_url(REDIS_URL)
    keys = list(cleaner.scan_iter(match=prefix + "*", count=1000))
    if keys:
        cleaner.delete(*keys)
    cleaner.close()
    for client in clients:
        client.close()
