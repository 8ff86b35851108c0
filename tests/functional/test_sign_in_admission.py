"""Admission that favours known devices, through the HTTP API (R6, S2).

In defended mode, sign-ins from devices Tutela has not seen share a small budget of
password hashes; beyond it they are answered 429 `sign_in_busy` with Retry-After and no
hash is computed, while a device that signed in before still gets in. Each process's
argon2 slots keep some room for known devices and second steps in progress (step-up).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email
from tests.functional.test_sign_in_api import (
    API,
    from_source,
    sign_in,
    signed_in,
    signed_in_device,
)
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.identity.admission import (
    AdmissionPolicy,
    Caller,
    MemoryAdmission,
    RedisAdmission,
)
from tutela.identity.passwords import PasswordHasher

# Three hashes for unknown devices, then one every two seconds; three slots, one reserved.
POLICY = AdmissionPolicy(
    hashes_per_second=0.5,
    burst=3,
    slots=3,
    reserved_slots=1,
    slot_wait_seconds=0.0,
    favoured_wait_seconds=0.0,
)


class CountingHasher:
    """The real hasher, counting the argon2id work asked of it."""

    def __init__(self, real: PasswordHasher) -> None:
        self.real = real
        self.verifies = 0
        self.hashes = 0

    def verify(self, stored: str | None, password: str) -> bool:
        self.verifies += 1
        return self.real.verify(stored, password)

    def hash(self, password: str) -> str:
        self.hashes += 1
        return self.real.hash(password)

    def needs_rehash(self, stored: str) -> bool:
        return self.real.needs_rehash(stored)


@pytest.fixture
def hasher(container: Container) -> CountingHasher:
    counting = CountingHasher(container.hasher)
    container.gate.hasher = counting  # type: ignore[assignment]
    return counting


@pytest.fixture
def admission(container: Container) -> MemoryAdmission:
    made = MemoryAdmission(POLICY)
    container.gate.admission = made
    return made


def defend(container: Container) -> None:
    container.throttle.enter_defended(container.clock.now().timestamp())


def failures(container: Container) -> int:
    with container.stores.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.tag == "account:login:failure")
            )
            or 0
        )


def stranger(client: TestClient, n: int) -> TestClient:
    return from_source(client, f"198.51.100.{10 + n}")


def assert_busy(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "sign_in_busy"
    assert int(answer.headers["retry-after"]) >= 1
    assert "token" not in answer.json()


def test_beyond_the_budget_unknown_devices_get_sign_in_busy_without_a_hash_and_known_ones_get_in(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    hasher: CountingHasher,
    admission: MemoryAdmission,
    unique: str,
) -> None:
    """R6: a stuffing attack from unknown devices spends the budget; after it, its attempts
    (and the real owner's from a new device, answered the same) cost no argon2id, and the
    owner's own device still signs in."""
    email = owner_email(home)
    device = signed_in_device(client, email)  # before the attack: an ordinary sign-in
    defend(container)
    hasher.verifies = 0

    for n in range(3):  # the budget: three hashes
        r = sign_in(stranger(client, n), f"leaked{n}.{unique}@example.com", "hunter2 leaked")
        assert r.status_code == 401, r.text
    assert hasher.verifies == 3
    recorded = failures(container)

    for n in range(3, 8):
        assert_busy(sign_in(stranger(client, n), f"leaked{n}.{unique}@example.com", "x" * 12))
    # The right password from a new device gets the same answer: nothing is revealed.
    assert_busy(sign_in(stranger(client, 9), email))
    assert hasher.verifies == 3  # not one more hash
    assert failures(container) == recorded  # no guess was checked, none is counted

    signed_in(sign_in(client, email, device=device))
    assert hasher.verifies == 4

    # The budget refills with time: two seconds give one more hash to unknown devices.
    container.clock.advance(timedelta(seconds=2))
    assert sign_in(stranger(client, 10), f"later.{unique}@example.com").status_code == 401
    assert hasher.verifies == 5
    assert_busy(sign_in(stranger(client, 11), f"later2.{unique}@example.com"))


def test_outside_defended_mode_the_budget_does_not_apply(
    client: TestClient,
    container: Container,
    hasher: CountingHasher,
    admission: MemoryAdmission,
    unique: str,
) -> None:
    for n in range(6):
        r = sign_in(stranger(client, n), f"nobody{n}.{unique}@example.com")
        assert r.status_code == 401, r.text
    assert hasher.verifies == 6


def test_reserved_slots_let_known_devices_and_step_up_through_while_unknown_ones_are_refused(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    hasher: CountingHasher,
    admission: MemoryAdmission,
    unique: str,
) -> None:
    """R6, C7: while unknown devices hold every ordinary argon2 slot of the process, a new
    one is refused at once, and the holder's device and a step-up use the reserved slot."""
    email = owner_email(home)
    device = signed_in_device(client, email)
    hasher.verifies = 0
    with ExitStack() as flood:
        for _ in range(POLICY.slots - POLICY.reserved_slots):
            flood.enter_context(admission.slot(Caller.NEW_DEVICE))
        assert_busy(sign_in(stranger(client, 1), f"flood.{unique}@example.com"))
        assert hasher.verifies == 0
        headers = signed_in(sign_in(client, email, device=device))
        r = client.post(f"{API}/auth/step-up", json={"password": PASSWORD}, headers=headers)
        assert r.status_code == 204, r.text
    assert hasher.verifies == 2


def test_sign_up_in_defended_mode_spends_from_the_same_budget(
    client: TestClient,
    container: Container,
    hasher: CountingHasher,
    admission: MemoryAdmission,
    unique: str,
) -> None:
    defend(container)
    for _ in range(POLICY.burst):  # unknown devices' sign-ins took the budget
        assert admission.take(container.clock.now().timestamp()) == 0.0
    answer = stranger(client, 1).post(
        f"{API}/signup",
        json={
            "name": "Rae Newcomer",
            "email": f"rae.{unique}@example.com",
            "password": f"copper {uuid.uuid4().hex} lantern",
        },
    )
    assert_busy(answer)
    assert hasher.hashes == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def budget_down(container: Container) -> Iterator[None]:
    """The budget's Redis is unreachable (the throttle, in memory here, still answers)."""
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.5
    )
    container.gate.admission = RedisAdmission(client, POLICY)
    yield
    client.close()


def test_without_the_budget_store_unknown_devices_get_503_and_known_devices_sign_in(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    hasher: CountingHasher,
    budget_down: None,
    unique: str,
) -> None:
    """Like the throttle (tests/functional/test_sign_in_redis_down.py), admission never
    fails open: in defended mode an unknown device is refused with 503 and no hash, while
    a known device, which spends nothing from the budget, still signs in."""
    email = owner_email(home)
    device = signed_in_device(client, email)  # not defended yet: no budget asked
    defend(container)
    hasher.verifies = 0
    answer = sign_in(stranger(client, 1), f"someone.{unique}@example.com")
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "service_unavailable"
    assert hasher.verifies == 0
    signed_in(sign_in(client, email, device=device))


def test_the_console_says_sign_in_is_busy(
    client: TestClient,
    container: Container,
    hasher: CountingHasher,
    admission: MemoryAdmission,
    unique: str,
) -> None:
    """A person on the console is told to try again in a few seconds, not that their
    password failed."""
    defend(container)
    for _ in range(POLICY.burst):
        assert admission.take(container.clock.now().timestamp()) == 0.0
    browser = stranger(client, 1)
    browser.get("/login")
    page = browser.post(
        "/login",
        data={
            "email": f"rae.{unique}@example.com",
            "password": PASSWORD,
            "csrf": browser.cookies["tutela_csrf"],
        },
    )
    assert page.status_code == 429
    assert "Sign-in is busy for a moment" in page.text
    assert hasher.verifies == 0
