"""Two worker processes share one throttle through Redis (S4, R6).

Each child is a separate Python process with its own client; what one records, the other
sees, and the switch into defended mode is reported by exactly one of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from tutela.identity.throttle import Attempt, RedisThrottle

REDIS_URL = os.environ.get("TUTELA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_700_000_000.0

# argv: redis url, key prefix, the second octet of the sources, failures to record.
# Waits for the parent's go (a list in Redis), then prints how many calls entered defended mode.
WORKER = """
import sys
import redis
from tutela.identity.throttle import Attempt, RedisThrottle

url, prefix, octet, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = redis.Redis.from_url(url)
throttle = RedisThrottle(client, prefix=prefix)
print("ready", flush=True)
client.blpop([prefix + "go"], timeout=30)
entered = 0
for n in range(count):
    attempt = Attempt(f"a:{n:040x}", f"198.{octet}.{n % 200}.{n // 200 + 1}")
    entered += throttle.record_failure(attempt, 1_700_000_000.0 + n / 1000)
print(entered, flush=True)
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("TUTELA_TEST_REDIS", "") == "required":
            pytest.fail("Redis is required (TUTELA_TEST_REDIS=required) but unreachable")
        pytest.skip("Redis is not reachable")
    name = f"tutela:test:{uuid.uuid4().hex}:"
    yield name
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _start(prefix: str, octet: int, count: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", WORKER, REDIS_URL, prefix, str(octet), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def test_two_processes_share_failures_and_report_defended_mode_once(prefix: str) -> None:
    workers = [_start(prefix, 51, 400), _start(prefix, 52, 400)]
    client = redis.Redis.from_url(REDIS_URL)
    client.rpush(prefix + "go", "go", "go")
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]

    assert sum(int(out.strip()) for out in outputs) == 1
    here = RedisThrottle(client, prefix=prefix)
    assert here.defended(T0 + 0.5)
    # The sources each child used are slowed for this third process too.
    assert not here.check(Attempt("a:" + "c" * 40, "198.51.0.1"), T0 + 0.5).allowed
    assert not here.check(Attempt("a:" + "c" * 40, "198.52.0.2"), T0 + 0.5).allowed
    assert here.check(Attempt("a:" + "c" * 40, "192.0.2.1"), T0 + 0.5).allowed
    client.close()
