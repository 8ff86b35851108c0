"""The sign-in door: a throttled source is refused before routing (R6, S4).

Refusals are counted in SQL statements: the door answers without a database session, so
an attacker's refused guesses cost neither a hash nor a query.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.factories import PASSWORD
from tests.functional.conftest import DEVICE_HEADER, known_devices, owner_email, sign_in
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.identity.admission import AdmissionPolicy, MemoryAdmission
from tutela.identity.door import GUARDED_PATHS, guarded
from tutela.identity.throttle import Attempt

SLOWED = "198.51.100.66"
API = "/api/v1"


class StatementCounter:
    """Counts SQL statements sent on the main and key stores' engines."""

    def __init__(self, container: Container) -> None:
        self.count = 0
        self.engines = [container.stores.main, container.stores.keys]
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def close(self) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._seen)


@pytest.fixture
def statements(container: Container) -> Iterator[StatementCounter]:
    counter = StatementCounter(container)
    yield counter
    counter.close()


@pytest.fixture
def slowed(client: TestClient, container: Container) -> TestClient:
    """A client at a source with more failures than its free ones: it must wait."""
    now = container.clock.now().timestamp()
    for n in range(container.settings.signin_source_free_failures + 2):
        container.throttle.record_failure(Attempt(f"a:{n:040x}", SLOWED), now)
    return TestClient(client.app, client=(SLOWED, 50000))


def test_a_throttled_source_is_refused_without_touching_the_database(
    slowed: TestClient, home: CreatedHome, statements: StatementCounter
) -> None:
    """One throttle read, no SQL, no hash: 429 with Retry-After and problem+json."""
    r = slowed.post(f"{API}/auth/token", json={"email": owner_email(home), "password": PASSWORD})

    assert r.status_code == 429
    assert statements.count == 0
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "too_many_attempts"
    assert body["retry_after"] > 0
    assert "Try again in" in body["detail"] and "seconds" in body["detail"]


def test_the_door_refuses_before_validation(
    slowed: TestClient, statements: StatementCounter
) -> None:
    """Even a body FastAPI would refuse (422) is not parsed: the door answers first."""
    for path in ("/auth/token", "/auth/token/factor", "/auth/token/link", "/signup"):
        r = slowed.post(API + path, content=b"not json", headers={"content-type": "text/plain"})
        assert r.status_code == 429, (path, r.text)
    assert statements.count == 0


def test_the_door_answers_exactly_what_the_route_answers(
    slowed: TestClient, home: CreatedHome, statements: StatementCounter
) -> None:
    """A device token goes on to the route (which alone can check it): an unknown one gets
    the route's own refusal, the same body as the door's."""
    payload = {"email": owner_email(home), "password": PASSWORD}
    at_the_door = slowed.post(f"{API}/auth/token", json=payload)
    assert statements.count == 0
    by_the_route = slowed.post(
        f"{API}/auth/token", json=payload, headers={"x-tutela-device": "tsd_not-a-real-device"}
    )
    assert statements.count > 0  # it went through: the device token was looked up

    assert at_the_door.status_code == by_the_route.status_code == 429
    assert at_the_door.json() == by_the_route.json()
    assert at_the_door.headers["retry-after"] == by_the_route.headers["retry-after"]


def test_the_console_sign_in_page_says_when_to_try_again(
    slowed: TestClient, statements: StatementCounter
) -> None:
    page = slowed.get("/login")  # the form itself is not a guess
    assert page.status_code == 200
    statements.count = 0

    r = slowed.post("/login", data={"email": "a@example.com", "password": "x", "csrf": "y"})
    assert r.status_code == 429
    assert statements.count == 0
    assert int(r.headers["retry-after"]) >= 1
    assert "text/html" in r.headers["content-type"]
    assert "Try again in" in r.text and "seconds" in r.text


def test_other_sources_and_other_paths_go_through(
    client: TestClient, slowed: TestClient, home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    # Sign-out (DELETE) and pages that are no guess are not the door's business.
    ended = slowed.delete(f"{API}/auth/token", headers=headers)
    assert ended.status_code == 204
    assert slowed.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("path", "is_guarded"),
    [
        ("/api/v1/auth/token", True),
        ("/api/v1/auth/token/factor", True),
        ("/api/v1/auth/token/link", True),
        ("/api/v1/staff/auth/token", True),
        ("/api/v1/signup", True),
        ("/api/v1/auth/passkey/options", True),
        ("/api/v1/auth/recovery", True),
        ("/login", True),
        ("/login/factor", True),
        ("/login/passkey", True),
        ("/forgot", True),
        ("/recover/confirm", True),
        ("/loginx", False),
        ("/logout", False),
        ("/api/v1/ingest/media", False),
        ("/api/v1/auth/step-up", False),
    ],
)
def test_the_guarded_paths(path: str, is_guarded: bool) -> None:
    assert guarded(path) is is_guarded
    assert "/api/v1/auth/passkey" in GUARDED_PATHS and "/login/passkey" in (
        p + "/passkey" for p in GUARDED_PATHS
    )


def _spent_budget(container: Container) -> None:
    """Defended mode on, and the hash budget for unknown devices spent (R6)."""
    now = container.clock.now().timestamp()
    container.gate.admission = MemoryAdmission(AdmissionPolicy(hashes_per_second=0.1, burst=1))
    container.throttle.enter_defended(now)
    assert container.gate.admission.take(now) == 0.0  # the one hash of the burst


def test_a_spent_hash_budget_is_answered_at_the_door(
    client: TestClient, container: Container, home: CreatedHome, statements: StatementCounter
) -> None:
    """R6: in defended mode with the budget spent, an unknown device's sign-in gets the
    route's `sign_in_busy` before routing: no SQL, no hash, Retry-After."""
    _spent_budget(container)
    stranger = TestClient(client.app, client=("203.0.113.77", 50000))

    r = stranger.post(f"{API}/auth/token", json={"email": owner_email(home), "password": PASSWORD})

    assert r.status_code == 429, r.text
    assert statements.count == 0
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "sign_in_busy"
    assert int(r.headers["retry-after"]) >= 1
    page = stranger.post("/login", data={"email": owner_email(home), "password": PASSWORD})
    assert page.status_code == 429
    assert statements.count == 0
    assert "Sign-in is busy" in page.text


def test_with_the_budget_spent_known_devices_and_second_steps_still_reach_the_route(
    client: TestClient, container: Container, home: CreatedHome, statements: StatementCounter
) -> None:
    """The door reads the budget only for an unknown device's password or sign-up: the
    holder's known device signs in, and a factor step goes on to the route."""
    email = owner_email(home)
    sign_in(client, email)  # before the attack: this device becomes known
    _spent_budget(container)

    again = client.post(
        f"{API}/auth/token",
        json={"email": email, "password": PASSWORD},
        headers={DEVICE_HEADER: known_devices(client)[email]},
    )
    assert again.status_code == 201, again.text
    before = statements.count
    factor = client.post(f"{API}/auth/token/factor", json={"challenge": "x", "code": "123456"})
    assert factor.status_code != 429
    assert statements.count > before


def test_with_a_hash_in_the_budget_the_door_lets_the_route_spend_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """The door's read spends nothing: the route takes the budget's hash and checks."""
    now = container.clock.now().timestamp()
    container.gate.admission = MemoryAdmission(AdmissionPolicy(hashes_per_second=0.1, burst=1))
    container.throttle.enter_defended(now)
    stranger = TestClient(client.app, client=("203.0.113.79", 50000))

    first = stranger.post(
        f"{API}/auth/token", json={"email": owner_email(home), "password": "a wrong guess"}
    )
    assert first.status_code == 401, first.text
    second = stranger.post(
        f"{API}/auth/token", json={"email": owner_email(home), "password": "a wrong guess"}
    )
    assert second.status_code == 429
    assert second.json()["code"] in {"sign_in_busy", "too_many_attempts"}
