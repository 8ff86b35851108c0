"""One behaviour suite for the sign-in throttle, in memory and in the real Redis (S2, S4, R6).

Time is passed in as seconds, so every test runs on a fake clock. Set
TUTELA_TEST_REDIS=required (CI does) to fail, not skip, when Redis is down.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import pytest
import redis

from tests import redis_server
from tests.redis_server import REDIS_URL, redis_space
from tutela.identity.throttle import (
    PENDING_SECONDS,
    Attempt,
    MemoryThrottle,
    RedisThrottle,
    Throttle,
    ThrottlePolicy,
    make_throttle,
    wait_text,
)
from tutela.settings import Settings

redis_up = redis_server.redis_up  # the fixture, shared with the other Redis tests

T0 = 1_700_000_000.0
ALICE = "a:" + "a1" * 20
BOB = "a:" + "b2" * 20
DEFAULT = ThrottlePolicy()
# Only the delays: the detector never trips.
QUIET = ThrottlePolicy(
    stuffing_min_failures=100_000, stuffing_breached_hits=100_000, stuffing_accounts_per_source=500
)


def account(n: int) -> str:
    return f"a:{n:040x}"


@dataclass
class Backend:
    """A store under test. `twins` share one state, as the workers of one service do."""

    name: str
    twins: Callable[[ThrottlePolicy, int], list[Throttle]]

    def throttle(self, policy: ThrottlePolicy = DEFAULT) -> Throttle:
        return self.twins(policy, 1)[0]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_up: bool) -> Iterator[Backend]:
    if request.param == "memory":

        def memory_twins(policy: ThrottlePolicy, n: int) -> list[Throttle]:
            one = MemoryThrottle(policy)
            return [one] * n

        yield Backend("memory", memory_twins)
        return
    if not redis_up:
        pytest.skip("Redis is not reachable")
    with redis_space() as (prefix, connect):

        def redis_twins(policy: ThrottlePolicy, n: int) -> list[Throttle]:
            return [RedisThrottle(connect(), policy, prefix=prefix) for _ in range(n)]

        yield Backend("redis", redis_twins)


@pytest.fixture
def throttle(backend: Backend) -> Throttle:
    return backend.throttle()


def fail(t: Throttle, source: str, now: float, *, times: int = 1, acct: str = ALICE) -> bool:
    entered = False
    for _ in range(times):
        entered |= t.record_failure(Attempt(acct, source), now)
    return entered


# --- source and network delays (S4, R6) ----------------------------------------------------


def test_delays_start_after_the_free_failures_double_and_stop_at_the_maximum(
    backend: Backend,
) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.7"
    fail(t, src, T0, times=4)
    assert t.check(Attempt(ALICE, src), T0).allowed

    now = T0
    waits = []
    for _ in range(13):
        fail(t, src, now)
        verdict = t.check(Attempt(ALICE, src), now)
        assert not verdict.allowed
        waits.append(verdict.retry_after)
        assert not t.check(Attempt(ALICE, src), now + verdict.retry_after - 0.01).allowed
        now += verdict.retry_after
        assert t.check(Attempt(ALICE, src), now).allowed

    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]


def test_a_slowed_source_does_not_slow_other_sources(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    fail(t, "203.0.113.9", T0, times=8)

    assert not t.check(Attempt(ALICE, "203.0.113.9"), T0).allowed
    # Other networks are untouched, and so are neighbours until the /24 has failed enough.
    other = t.check(Attempt(ALICE, "198.51.100.9"), T0)
    assert other.allowed and other.retry_after == 0
    assert t.check(Attempt(ALICE, "203.0.113.10"), T0).allowed


def test_an_ipv4_network_is_counted_by_its_slash_24(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    for host in range(1, 21):  # 20 sources, one failure each: no source is slowed
        fail(t, f"203.0.113.{host}", T0)

    refused = t.check(Attempt(BOB, "203.0.113.200"), T0)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
    assert t.check(Attempt(BOB, "203.0.114.1"), T0).allowed
    assert t.check(Attempt(BOB, "203.0.112.255"), T0).allowed


def test_an_ipv6_network_is_counted_by_its_slash_64(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    for host in range(1, 21):
        fail(t, f"2001:db8:1:2::{host:x}", T0)

    assert not t.check(Attempt(BOB, "2001:db8:1:2:ffff:ffff:ffff:1"), T0).allowed
    assert t.check(Attempt(BOB, "2001:db8:1:3::1"), T0).allowed


def test_the_same_address_written_two_ways_is_one_source(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    fail(t, "2001:DB8:0:0::1", T0, times=3)
    fail(t, "2001:db8::1", T0, times=2)
    assert not t.check(Attempt(ALICE, "2001:0db8::0001"), T0).allowed
    fail(t, "::ffff:192.0.2.1", T0, times=5)
    assert not t.check(Attempt(ALICE, "192.0.2.1"), T0).allowed


def test_text_that_is_no_address_is_its_own_network(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    fail(t, "unknown", T0, times=30)
    assert not t.check(Attempt(ALICE, "unknown"), T0).allowed
    assert t.check(Attempt(ALICE, "unknown2"), T0).allowed


def test_a_known_device_is_not_slowed_but_its_failures_count(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.20"
    fail(t, src, T0, times=10)  # an attacker behind the victim's address
    assert not t.check(Attempt(ALICE, src), T0).allowed
    mine = t.check(Attempt(ALICE, src, known_device=True), T0)
    assert mine.allowed and mine.retry_after == 0

    t.record_failure(Attempt(ALICE, src, known_device=True), T0)
    assert t.check(Attempt(ALICE, src), T0).retry_after == pytest.approx(64.0)  # 11th failure

    for neighbour in range(21, 45):  # and the whole network is slowed
        fail(t, f"198.51.100.{neighbour}", T0)
    assert not t.check(Attempt(ALICE, "198.51.100.99"), T0).allowed
    assert t.check(Attempt(ALICE, "198.51.100.99", known_device=True), T0).allowed


def test_source_failures_are_forgotten_a_day_after_the_last(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.30"
    fail(t, src, T0, times=12)
    memory = QUIET.failure_memory_seconds
    assert not t.check(Attempt(BOB, src), T0).allowed
    assert t.check(Attempt(BOB, src), T0 + memory - 1).risky

    later = t.check(Attempt(BOB, src), T0 + memory)
    assert later.allowed and later.retry_after == 0 and not later.risky
    fail(t, src, T0 + memory, acct=BOB)
    assert t.check(Attempt(BOB, src), T0 + memory).allowed  # 1 failure, not 13
    # The account's count is not the source's: it is still there (S2).
    assert t.check(Attempt(ALICE, src), T0 + memory).account_failures == 12


# --- the account: challenges, never a lockout (S2) -----------------------------------------


def test_an_account_asks_for_a_second_factor_after_five_failures(throttle: Throttle) -> None:
    src = "198.51.100.40"
    fail(throttle, src, T0, times=4)
    assert not throttle.check(Attempt(ALICE, "192.0.2.1"), T0).step_up
    fail(throttle, src, T0)

    verdict = throttle.check(Attempt(ALICE, "192.0.2.1"), T0)
    assert verdict.step_up and verdict.account_failures == 5
    assert not throttle.check(Attempt(BOB, "192.0.2.1"), T0).step_up


def test_an_attacker_cannot_lock_the_holder_out(throttle: Throttle) -> None:
    for n in range(500):
        throttle.record_failure(Attempt(ALICE, f"198.51.{n // 250}.{n % 250}"), T0 + n)

    holder = throttle.check(Attempt(ALICE, "192.0.2.77"), T0 + 500)
    assert holder.allowed and holder.retry_after == 0
    assert holder.account_failures == DEFAULT.account_max_failures
    assert holder.step_up and holder.password_locked
    # The holder's own device is not slowed either: it goes on through the emailed link.
    on_own_device = throttle.check(Attempt(ALICE, "192.0.2.77", known_device=True), T0 + 500)
    assert on_own_device.allowed and on_own_device.retry_after == 0


def test_passwords_and_codes_are_not_checked_after_100_failures_from_any_device(
    backend: Backend,
) -> None:
    """S2 (NIST SP 800-63B §5.2.2): at most 100 consecutive failures, whichever device sent
    them. A known device used to be exempt; its guesses now count and stop like any other."""
    t = backend.throttle(QUIET)
    fail(t, "198.51.100.50", T0, times=99)
    assert not t.check(Attempt(ALICE, "192.0.2.5"), T0).password_locked
    t.record_failure(Attempt(ALICE, "192.0.2.5", known_device=True), T0)  # a wrong code

    assert t.check(Attempt(ALICE, "192.0.2.5"), T0).password_locked
    assert t.check(Attempt(ALICE, "192.0.2.5", known_device=True), T0).password_locked
    assert not t.check(Attempt(BOB, "192.0.2.5"), T0).password_locked


def test_codes_need_the_emailed_link_well_before_the_limit(backend: Backend) -> None:
    """S2's challenge before the limit: after `account_link_after` failures from anywhere,
    a code is only checked on a sign-in that came through the mailbox."""
    t = backend.throttle(QUIET)
    fail(t, "198.51.100.51", T0, times=QUIET.account_link_after - 1)
    assert not t.check(Attempt(ALICE, "192.0.2.6", known_device=True), T0).codes_locked
    fail(t, "198.51.100.52", T0)
    verdict = t.check(Attempt(ALICE, "192.0.2.6", known_device=True), T0)
    assert verdict.codes_locked and not verdict.password_locked
    assert QUIET.account_link_after < QUIET.account_max_failures


def test_an_accounts_failures_still_count_after_two_days_without_attempts(
    backend: Backend,
) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.55"
    fail(t, src, T0, times=6)
    two_days = T0 + 2 * 86_400

    verdict = t.check(Attempt(ALICE, "192.0.2.55"), two_days)
    assert verdict.step_up and verdict.account_failures == 6
    # The source's delay is forgotten after failure_memory, so it is not slowed any more.
    from_source = t.check(Attempt(ALICE, src), two_days)
    assert from_source.allowed and not from_source.risky and from_source.step_up
    # And a sweep in between (the memory store sweeps on every record) keeps the account.
    fail(t, "192.0.2.56", two_days)
    assert t.check(Attempt(ALICE, src), two_days).account_failures == 7


def test_failures_up_to_the_limit_add_up_over_weeks(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    gap = 2 * 86_400  # longer than failure_memory, shorter than account_memory
    for n in range(DEFAULT.account_max_failures):
        fail(t, f"198.51.100.{n + 1}", T0 + n * gap)
    last = T0 + (DEFAULT.account_max_failures - 1) * gap
    verdict = t.check(Attempt(ALICE, "192.0.2.57"), last + gap)
    assert verdict.password_locked and verdict.account_failures == 100 and verdict.allowed


def test_an_accounts_count_is_forgotten_after_account_memory(backend: Backend) -> None:
    policy = ThrottlePolicy(
        stuffing_min_failures=100_000,
        stuffing_breached_hits=100_000,
        stuffing_accounts_per_source=500,
        account_memory_seconds=3 * 86_400,
    )
    t = backend.throttle(policy)
    fail(t, "198.51.100.58", T0, times=12)
    memory = policy.account_memory_seconds
    assert t.check(Attempt(ALICE, "192.0.2.58"), T0 + memory - 1).account_failures == 12

    later = t.check(Attempt(ALICE, "192.0.2.58"), T0 + memory)
    assert later.account_failures == 0 and not later.step_up
    fail(t, "192.0.2.59", T0 + memory)
    assert t.check(Attempt(ALICE, "192.0.2.58"), T0 + memory).account_failures == 1


def test_the_default_account_memory_is_ninety_days(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    fail(t, "198.51.100.59", T0, times=5)
    ninety_days = 90 * 86_400
    assert QUIET.account_memory_seconds == ninety_days
    assert t.check(Attempt(ALICE, "192.0.2.60"), T0 + ninety_days - 1).step_up
    assert not t.check(Attempt(ALICE, "192.0.2.60"), T0 + ninety_days).step_up


def test_the_memory_store_sweeps_idle_sources_and_accounts() -> None:
    t = MemoryThrottle(
        ThrottlePolicy(
            stuffing_min_failures=100_000,
            stuffing_breached_hits=100_000,
            stuffing_accounts_per_source=500,
            failure_memory_seconds=3600,
            account_memory_seconds=2 * 86_400,
        )
    )
    for n in range(50):
        t.record_failure(Attempt(account(n), f"198.51.100.{n + 1}"), T0)
    assert (len(t._sources), len(t._accounts)) == (50, 50)

    t.record_success(Attempt(BOB, "192.0.2.1"), T0 + 3600)  # the sweep runs within minutes
    assert (len(t._sources), len(t._networks), len(t._accounts)) == (0, 0, 50)
    t.record_success(Attempt(BOB, "192.0.2.1"), T0 + 2 * 86_400)
    assert len(t._accounts) == 0


def test_redis_keeps_account_keys_for_the_account_memory(redis_up: bool) -> None:
    if not redis_up:
        pytest.skip("Redis is not reachable")
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"tutela:test:{uuid.uuid4().hex}:"
    t = RedisThrottle(client, QUIET, prefix=prefix)
    try:
        t.record_failure(Attempt(ALICE, "192.0.2.210"), T0)
        account_ttl = client.ttl(prefix + "acct:" + ALICE)
        source_ttl = client.ttl(prefix + "src:192.0.2.210")
        assert 90 * 86_400 < account_ttl <= 90 * 86_400 + 60
        assert 86_400 < source_ttl <= 86_400 + 60
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_account_memory_must_be_positive() -> None:
    with pytest.raises(ValueError, match="account_memory_seconds"):
        ThrottlePolicy(account_memory_seconds=0)


def test_a_complete_sign_in_clears_the_account_but_not_the_source(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.60"
    fail(t, src, T0, times=7)
    assert t.check(Attempt(ALICE, "192.0.2.9"), T0).step_up

    t.reset_account(Attempt(ALICE, src))

    verdict = t.check(Attempt(ALICE, "192.0.2.9"), T0)
    assert verdict.account_failures == 0 and not verdict.step_up
    assert not t.check(Attempt(ALICE, src), T0).allowed


# --- the stuffing detector and defended mode (R6) ------------------------------------------


def test_many_failures_in_a_minute_switch_defended_mode_on(throttle: Throttle) -> None:
    for n in range(14):
        assert not throttle.record_success(Attempt(account(n), "192.0.2.1"), T0)
    # 20 failures of 34 attempts is under 60 %.
    assert not fail(throttle, "198.51.100.70", T0, times=20)
    assert not throttle.defended(T0)

    assert fail(throttle, "198.51.100.70", T0)  # 21 of 35 = 60 %
    assert throttle.defended(T0)
    assert throttle.check(Attempt(BOB, "192.0.2.1"), T0).defended
    assert not fail(throttle, "198.51.100.70", T0, times=5)  # reported once


def test_failures_outside_the_window_do_not_add_up(throttle: Throttle) -> None:
    assert not fail(throttle, "198.51.100.71", T0, times=19)
    assert not fail(throttle, "198.51.100.71", T0 + 61)
    assert not throttle.defended(T0 + 61)


def test_three_sources_each_failing_on_four_accounts_switch_defended_mode_on(
    throttle: Throttle,
) -> None:
    sources = ["198.51.100.80", "203.0.113.80", "192.0.2.80"]
    for i, src in enumerate(sources):
        for n in range(4):
            entered = throttle.record_failure(Attempt(account(10 * i + n), src), T0 + i)
            assert entered == (i == 2 and n == 3)
    assert throttle.defended(T0 + 2)


def test_passwords_from_breaches_switch_defended_mode_on(throttle: Throttle) -> None:
    for n in range(9):
        assert not throttle.record_success(Attempt(account(n), "192.0.2.2"), T0, breached=True)
    assert throttle.record_failure(Attempt(account(9), "192.0.2.3"), T0, breached=True)
    assert throttle.defended(T0)


def test_a_stuffing_source_is_risky_even_after_its_failures_are_forgotten(
    backend: Backend,
) -> None:
    t = backend.throttle(ThrottlePolicy(failure_memory_seconds=1))
    for n in range(4):
        t.record_failure(Attempt(account(n), "198.51.100.90"), T0)
    t.record_failure(Attempt(account(9), "198.51.100.91"), T0)

    assert t.check(Attempt(BOB, "198.51.100.90"), T0 + 30).risky
    assert not t.check(Attempt(BOB, "198.51.100.91"), T0 + 30).risky
    assert not t.check(Attempt(BOB, "198.51.100.90"), T0 + 61).risky


def test_risky_marks_a_source_and_its_network_after_a_failure(throttle: Throttle) -> None:
    assert not throttle.check(Attempt(BOB, "198.51.100.100"), T0).risky
    fail(throttle, "198.51.100.100", T0)

    assert throttle.check(Attempt(BOB, "198.51.100.100"), T0).risky
    assert throttle.check(Attempt(BOB, "198.51.100.101"), T0).risky
    assert not throttle.check(Attempt(BOB, "198.51.101.100"), T0).risky


def test_the_operator_switch(throttle: Throttle) -> None:
    assert not throttle.defended(T0)
    assert throttle.enter_defended(T0)
    assert not throttle.enter_defended(T0 + 1)
    assert throttle.defended(T0 + 1)

    throttle.leave_defended()
    assert not throttle.defended(T0 + 1)
    assert throttle.enter_defended(T0 + 2)


def test_defended_mode_ends_after_its_period(throttle: Throttle) -> None:
    assert throttle.enter_defended(T0)
    assert throttle.defended(T0 + DEFAULT.defended_seconds - 1)
    assert not throttle.defended(T0 + DEFAULT.defended_seconds)
    assert not throttle.check(Attempt(BOB, "192.0.2.1"), T0 + DEFAULT.defended_seconds).defended
    assert throttle.enter_defended(T0 + DEFAULT.defended_seconds)


def test_an_attack_that_goes_on_keeps_defended_mode_on(throttle: Throttle) -> None:
    assert fail(throttle, "198.51.100.110", T0, times=20)
    later = T0 + DEFAULT.defended_seconds - 10
    assert not fail(throttle, "198.51.100.111", later, times=20)
    assert throttle.defended(T0 + DEFAULT.defended_seconds + 60)


def test_in_defended_mode_one_failure_slows_a_source(throttle: Throttle) -> None:
    throttle.enter_defended(T0)
    fail(throttle, "198.51.100.120", T0)

    refused = throttle.check(Attempt(BOB, "198.51.100.120"), T0)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
    assert throttle.check(Attempt(BOB, "198.51.100.121"), T0).allowed
    for host in range(121, 125):  # five failures in the /24 are a quarter of its 20
        fail(throttle, f"198.51.100.{host}", T0 + 10)
    assert not throttle.check(Attempt(BOB, "198.51.100.200"), T0 + 10).allowed
    assert throttle.check(Attempt(BOB, "198.51.100.200", known_device=True), T0 + 10).allowed


def test_in_defended_mode_risky_attempts_need_a_second_factor(throttle: Throttle) -> None:
    throttle.enter_defended(T0)
    fail(throttle, "198.51.100.130", T0, acct=ALICE)

    risky = throttle.check(Attempt(BOB, "198.51.100.130"), T0 + 10)
    assert risky.allowed and risky.risky and risky.step_up
    assert not throttle.check(Attempt(BOB, "198.51.100.130", known_device=True), T0 + 10).step_up
    calm = throttle.check(Attempt(BOB, "192.0.2.130"), T0 + 10)
    assert calm.allowed and not calm.risky and not calm.step_up


# --- shared state: many workers, one answer ------------------------------------------------


def _together(calls: list[Callable[[], bool]]) -> list[bool]:
    barrier = threading.Barrier(len(calls))
    results: list[bool] = [False] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_entering_defended_mode_is_reported_once_by_racing_workers(backend: Backend) -> None:
    first, second = backend.twins(DEFAULT, 2)

    def flood(t: Throttle, offset: int) -> Callable[[], bool]:
        def run() -> bool:
            return sum(fail(t, f"198.51.{offset}.{n}", T0) for n in range(30)) == 1

        return run

    entered = _together([flood(first, 1), flood(second, 2)])
    assert entered.count(True) == 1

    for round_ in range(20):
        first.leave_defended()
        now = T0 + DEFAULT.defended_seconds * (round_ + 1)
        switched = _together(
            [partial(first.enter_defended, now), partial(second.enter_defended, now)]
        )
        assert switched.count(True) == 1


def test_failures_seen_by_one_worker_slow_the_source_at_another(backend: Backend) -> None:
    first, second = backend.twins(QUIET, 2)
    fail(first, "198.51.100.140", T0, times=6)
    assert not second.check(Attempt(BOB, "198.51.100.140"), T0).allowed


# --- what is stored --------------------------------------------------------------------------


def test_an_email_address_is_refused_as_an_account_key() -> None:
    with pytest.raises(ValueError, match="opaque"):
        Attempt("alice@example.com", "192.0.2.1")


@pytest.mark.parametrize(
    ("source", "prefix"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.0/24"),
        ("not an address", "not an address"),
    ],
)
def test_the_prefix_of_a_source(source: str, prefix: str) -> None:
    assert Attempt(ALICE, source).prefix == prefix


def test_redis_keys_hold_only_account_keys_and_addresses(redis_up: bool) -> None:
    if not redis_up:
        pytest.skip("Redis is not reachable")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"tutela:test:{uuid.uuid4().hex}:"
    t = RedisThrottle(client, prefix=prefix)
    try:
        t.record_failure(Attempt(ALICE, "bob@example.com; pw=hunter2"), T0, breached=True)
        t.record_failure(Attempt(ALICE, "192.0.2.200"), T0)
        t.record_success(Attempt(BOB, "192.0.2.201"), T0)
        assert not t.check(Attempt(BOB, "192.0.2.200"), T0).step_up  # str replies work too

        keys = list(client.scan_iter(match=prefix + "*"))
        members = [m for k in keys if client.type(k) == "zset" for m in client.zrange(k, 0, -1)]
        stored = " ".join(keys + members)
        assert "@" not in stored and "hunter2" not in stored
        assert ALICE in stored and "192.0.2.200" in stored
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_make_throttle_follows_the_settings(redis_up: bool) -> None:
    settings = Settings(defended_mode_minutes=5, signin_source_free_failures=2)
    assert ThrottlePolicy.from_settings(settings).account_memory_seconds == 90 * 86_400
    short = Settings(signin_account_memory_days=2)
    assert ThrottlePolicy.from_settings(short).account_memory_seconds == 2 * 86_400
    memory = make_throttle(settings)
    assert isinstance(memory, MemoryThrottle)
    fail(memory, "192.0.2.9", T0, times=2)
    assert not memory.check(Attempt(ALICE, "192.0.2.9"), T0).allowed
    assert memory.enter_defended(T0)
    assert not memory.defended(T0 + 300)

    if redis_up:
        shared = make_throttle(Settings(redis_url=REDIS_URL))
        assert isinstance(shared, RedisThrottle)


# --- checking and recording as one step (S2, S4) --------------------------------------------


def test_concurrent_connections_get_no_more_guesses_than_the_free_failures(
    backend: Backend,
) -> None:
    """Four connections racing on one source get at most the source's free guesses (five),
    not eight: `begin` checks and reserves a slot in one atomic step."""
    twins = backend.twins(QUIET, 4)
    src = "198.51.100.160"
    guesses: list[int] = []
    lock = threading.Lock()

    def guesser(t: Throttle, n: int) -> Callable[[], bool]:
        def run() -> bool:
            for i in range(10):
                attempt = Attempt(account(n * 100 + i), src)
                if not t.begin(attempt, T0).allowed:
                    continue
                with lock:
                    guesses.append(n)
                threading.Event().wait(0.005)  # the password hash
                t.record_failure(attempt, T0)
            return True

        return run

    _together([guesser(t, n) for n, t in enumerate(twins)])
    assert len(guesses) == QUIET.source_free_failures
    assert not twins[0].check(Attempt(ALICE, src), T0).allowed


def test_a_reservation_counts_until_it_is_consumed_released_or_stale(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.161"
    first = Attempt(ALICE, src)
    assert t.begin(first, T0).reserved
    assert t.check(first, T0).account_failures == 1  # in flight

    t.release(first, T0)
    assert t.check(first, T0).account_failures == 0  # released: nothing counted

    assert t.begin(first, T0).reserved
    t.record_failure(first, T0)
    assert t.check(first, T0).account_failures == 1  # consumed: one failure, not two

    for _ in range(QUIET.source_free_failures):
        t.begin(Attempt(BOB, src), T0 + 1)  # workers that died mid-attempt
    assert not t.check(Attempt(BOB, src), T0 + 1).allowed
    assert t.check(Attempt(BOB, src), T0 + 1 + PENDING_SECONDS).allowed


def test_a_refused_attempt_reserves_nothing(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.162"
    fail(t, src, T0, times=QUIET.source_free_failures)
    refused = t.begin(Attempt(BOB, src), T0)
    assert not refused.allowed and not refused.reserved and refused.retry_after > 0
    assert t.check(Attempt(BOB, src), T0).account_failures == 0


def test_the_source_wait_is_the_wait_an_unknown_device_gets(backend: Backend) -> None:
    t = backend.throttle(QUIET)
    src = "198.51.100.163"
    assert t.source_wait(src, T0) == 0.0
    fail(t, src, T0, times=QUIET.source_free_failures + 2)
    wait = t.source_wait(src, T0 + 1)
    assert wait == pytest.approx(t.check(Attempt(BOB, src), T0 + 1).retry_after)
    assert wait == pytest.approx(3.0)  # 4 s after the seventh failure, 1 s later
    assert t.source_wait("198.51.100.164", T0 + 1) == 0.0
    assert t.source_wait("198.51.100.164", T0 + 1) == 0.0


def test_the_wait_is_said_in_seconds_or_minutes() -> None:
    assert wait_text(0.2) == "Try again in 1 second."
    assert wait_text(42.3) == "Try again in 43 seconds."
    assert wait_text(900) == "Try again in 15 minutes."
    assert wait_text(3 * 3600) == "Try again in 3 hours."


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (each is one round trip here)."""

    sent = 0

    def execute_command(self, *args: object, **options: object) -> object:
        self.sent += 1
        return super().execute_command(*args, **options)


def test_the_door_and_begin_each_cost_one_redis_round_trip(redis_up: bool) -> None:
    """R6: a refusal before routing costs one Redis call, and so does checking with
    reserving (`begin`); releasing costs one too."""
    if not redis_up:
        pytest.skip("Redis is not reachable")
    client = CountingRedis.from_url(REDIS_URL)
    prefix = f"tutela:test:{uuid.uuid4().hex}:"
    t = RedisThrottle(client, QUIET, prefix=prefix)
    attempt = Attempt(ALICE, "198.51.100.170")
    for call in (
        partial(t.source_wait, "198.51.100.170", T0),  # the first call loads the script
        partial(t.begin, attempt, T0),
        partial(t.release, attempt, T0),
    ):
        call()
        client.sent = 0
        call()
        assert client.sent == 1, call
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()
