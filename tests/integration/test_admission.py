"""Admission to argon2id work, in memory and in the real Redis (R6).

The budget of hashes for unknown devices refills by the clock passed in, so every test
runs on a fake clock; two Redis clients stand for two API processes sharing one budget.
Set TUTELA_TEST_REDIS=required (CI does) to fail, not skip, when Redis is down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests import redis_server
from tests.redis_server import REDIS_URL, redis_space
from tutela.core.errors import SignInBusy
from tutela.identity.admission import (
    Admission,
    AdmissionPolicy,
    Caller,
    MemoryAdmission,
    RedisAdmission,
    make_admission,
)
from tutela.settings import Settings

redis_up = redis_server.redis_up  # the fixture, shared with the other Redis tests

T0 = 1_700_000_000.0
# Five hashes a second, ten at once after a quiet spell; no waiting for a slot.
POLICY = AdmissionPolicy(
    hashes_per_second=5.0,
    burst=10,
    slots=3,
    reserved_slots=1,
    slot_wait_seconds=0.0,
    favoured_wait_seconds=0.0,
)


@dataclass
class Backend:
    """A store under test; `twins` share one budget, as the API processes of one service do."""

    name: str
    twins: Callable[[AdmissionPolicy, int], list[Admission]]

    def admission(self, policy: AdmissionPolicy = POLICY) -> Admission:
        return self.twins(policy, 1)[0]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_up: bool) -> Iterator[Backend]:
    if request.param == "memory":

        def memory_twins(policy: AdmissionPolicy, n: int) -> list[Admission]:
            return [MemoryAdmission(policy)] * n

        yield Backend("memory", memory_twins)
        return
    if not redis_up:
        pytest.skip("Redis is not reachable")
    with redis_space() as (prefix, connect):

        def redis_twins(policy: AdmissionPolicy, n: int) -> list[Admission]:
            return [RedisAdmission(connect(), policy, prefix=prefix) for _ in range(n)]

        yield Backend("redis", redis_twins)


def spend(admission: Admission, now: float, times: int) -> int:
    """How many of `times` hashes the budget allowed at `now`."""
    return sum(1 for _ in range(times) if admission.take(now) == 0.0)


# --- the budget ------------------------------------------------------------------------------


def test_the_budget_allows_its_burst_then_refuses_with_the_time_to_the_next_hash(
    backend: Backend,
) -> None:
    admission = backend.admission()
    assert spend(admission, T0, 10) == 10
    wait = admission.take(T0)
    assert wait == pytest.approx(0.2)  # one hash every 1/5 s
    assert admission.take(T0) == pytest.approx(0.2)  # a refusal spends nothing


def test_the_bucket_refills_by_the_clock_and_never_beyond_its_burst(backend: Backend) -> None:
    admission = backend.admission()
    assert spend(admission, T0, 10) == 10
    assert spend(admission, T0 + 0.1, 5) == 0  # half a hash has come back
    assert admission.take(T0 + 0.1) == pytest.approx(0.1)
    assert spend(admission, T0 + 1.0, 10) == 5  # a second: five hashes
    assert spend(admission, T0 + 1000.0, 50) == 10  # a long quiet spell: the burst, no more


def test_a_clock_behind_the_last_call_adds_nothing_to_the_bucket(
    backend: Backend,
) -> None:
    admission = backend.admission()
    assert spend(admission, T0 + 5.0, 10) == 10
    # Another process whose clock is a second behind: no refill from going back in time.
    assert spend(admission, T0 + 4.0, 3) == 0


def test_two_processes_share_one_budget(backend: Backend) -> None:
    first, second = backend.twins(POLICY, 2)
    assert spend(first, T0, 6) == 6
    assert spend(second, T0, 6) == 4  # what the first left, no more
    assert first.take(T0) > 0.0
    assert spend(second, T0 + 0.4, 3) == 2
    assert spend(first, T0 + 0.4, 1) == 0


def test_concurrent_callers_never_overspend_the_budget(backend: Backend) -> None:
    twins = backend.twins(POLICY, 4)
    allowed: list[int] = []
    lock = threading.Lock()

    def worker(admission: Admission) -> None:
        got = spend(admission, T0, 25)
        with lock:
            allowed.append(got)

    threads = [threading.Thread(target=worker, args=(a,)) for a in twins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 10


# --- the slots ---------------------------------------------------------------------------------


def test_reserved_slots_admit_known_devices_and_second_steps_while_new_devices_are_refused(
    backend: Backend,
) -> None:
    admission = backend.admission()
    with admission.slot(Caller.NEW_DEVICE), admission.slot(Caller.NEW_DEVICE):
        # Every ordinary slot is taken by unknown devices: the next one is refused ...
        with pytest.raises(SignInBusy) as refused, admission.slot(Caller.NEW_DEVICE):
            pass
        assert refused.value.code == "sign_in_busy"
        assert refused.value.extra["retry_after"] >= 1
        # ... while a known device and a step-up still get the reserved one, in turn.
        with (
            admission.slot(Caller.KNOWN_DEVICE),
            pytest.raises(SignInBusy),
            admission.slot(Caller.SECOND_STEP),
        ):
            pass
        with admission.slot(Caller.SECOND_STEP):
            pass
    # Slots are given back when the hash is done.
    with admission.slot(Caller.NEW_DEVICE), admission.slot(Caller.NEW_DEVICE):
        pass


def test_a_known_device_waits_for_a_slot_given_back_while_a_new_one_is_turned_away() -> None:
    admission = MemoryAdmission(
        AdmissionPolicy(slots=2, reserved_slots=1, slot_wait_seconds=0.0, burst=1)
    )
    release = threading.Event()
    holding = threading.Barrier(3)

    def holder(caller: Caller) -> None:
        with admission.slot(caller):
            holding.wait(5)
            release.wait(5)

    threads = [
        threading.Thread(target=holder, args=(c,)) for c in (Caller.NEW_DEVICE, Caller.KNOWN_DEVICE)
    ]
    for t in threads:
        t.start()
    holding.wait(5)  # every slot is taken
    with pytest.raises(SignInBusy), admission.slot(Caller.NEW_DEVICE):
        pass
    timer = threading.Timer(0.1, release.set)
    timer.start()
    with admission.slot(Caller.KNOWN_DEVICE):  # waits (up to 5 s) for a slot given back
        pass
    for t in threads:
        t.join()
    timer.join()


# --- settings ----------------------------------------------------------------------------------


def test_settings_choose_the_store_and_the_numbers(redis_up: bool) -> None:
    embedded = make_admission(Settings(environment="test"))
    assert isinstance(embedded, MemoryAdmission)
    if redis_up:
        shared = make_admission(Settings(environment="test", redis_url=REDIS_URL))
        assert isinstance(shared, RedisAdmission)
    policy = AdmissionPolicy.from_settings(
        Settings(
            environment="test",
            argon2_slots=8,
            argon2_reserved_slots=3,
            defended_hashes_per_second=2.5,
            defended_hash_burst=4,
        )
    )
    assert (policy.slots, policy.reserved_slots) == (8, 3)
    assert (policy.hashes_per_second, policy.burst) == (2.5, 4)
    defaults = Settings(environment="test")
    assert (defaults.hash_slots, defaults.reserved_hash_slots) == (4, 1)
    # A single slot (an existing TUTELA_ARGON2_MAX_CONCURRENT=1) still starts: none reserved.
    assert Settings(environment="test", argon2_max_concurrent=1).reserved_hash_slots == 0


def test_settings_refuse_reserving_every_slot() -> None:
    with pytest.raises(ValueError, match="RESERVED_SLOTS"):
        Settings(environment="test", argon2_slots=2, argon2_reserved_slots=2)
