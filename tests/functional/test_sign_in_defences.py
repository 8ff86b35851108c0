"""Attacks on the sign-in path found in review, each shown to fail (R4, R5, S2, S4, C7).

Each test plays the attacker: someone who knows the password (or has a stolen session)
but not the second factor, or a cross-site page.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import PASSWORD
from tests.functional.conftest import known_devices, owner_email, sign_in
from tutela.app import create_app
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.core.errors import (
    InvalidCredentials,
    NotAuthenticated,
    SignInBusy,
    TooManyAttempts,
)
from tutela.households import service as households
from tutela.households.service import CreatedHome
from tutela.identity import factors
from tutela.identity.models import KnownDevice, SessionKind
from tutela.identity.owners import Owner
from tutela.identity.signin import Client
from tutela.identity.throttle import LINK_AFTER
from tutela.notices.mail import latest_message
from tutela.settings import Settings

T = TypeVar("T")
SECRET = b"0123456789abcdefghij"
TOTP = pyotp.TOTP(base64.b32encode(SECRET).decode())


def owner_of(container: Container, home: CreatedHome) -> tuple[str, Owner]:
    email = owner_email(home)
    with container.stores.session() as s:
        account = households.find_account(
            s, container.vault.keys, email=email, now=container.clock.now()
        )
        assert account is not None
        return email, Owner.account(account.household_id, account.id, account.profile_id)


def enrol_totp(container: Container, owner: Owner) -> None:
    now = container.clock.now()
    with container.stores.session() as s:
        made = factors.begin_totp(
            s, container.vault.keys, owner, label="app", account_name="x", now=now, secret=SECRET
        )
        factors.confirm_totp(s, container.vault.keys, owner, made.factor_id, TOTP.at(now), now=now)
        s.commit()
    container.clock.advance(timedelta(seconds=90))


def wrong_code(container: Container) -> str:
    near = {TOTP.at(container.clock.now() + timedelta(seconds=d)) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in near)


def paced(container: Container, attempt: Callable[[], T]) -> T:
    """An attempt from an unknown device by an attacker who keeps to defended mode's budget
    of hashes (R6): a `sign_in_busy` refusal checked nothing, so it waits on the fake clock
    and tries again."""
    pace = timedelta(seconds=1 / container.settings.defended_hashes_per_second)
    while True:
        try:
            return attempt()
        except SignInBusy:
            container.clock.advance(pace)


def waited(container: Container, send: Callable[[], httpx.Response]) -> httpx.Response:
    """An HTTP attempt by someone who obeys `sign_in_busy`'s Retry-After: in defended mode
    with the hash budget spent the sign-in door answers it before routing (R6)."""
    pace = timedelta(seconds=1 / container.settings.defended_hashes_per_second)
    while True:
        answer = send()
        if answer.status_code != 429 or answer.json().get("code") != "sign_in_busy":
            return answer
        container.clock.advance(pace)


def fail_from_many_sources(
    container: Container, email: str, times: int, *, staff: bool = False
) -> None:
    """`times` wrong passwords from as many sources; the stuffing detector soon switches
    defended mode on, and the attacker then keeps to its budget (`paced`)."""
    for i in range(times):
        client = Client(address=f"10.{i // 200}.{i % 200}.1")
        with container.stores.session() as s, pytest.raises((InvalidCredentials, TooManyAttempts)):
            paced(
                container,
                lambda: container.gate.sign_in(
                    s,
                    email=email,
                    password=f"wrong guess {i}",  # noqa: B023 - called before the next round
                    kind=SessionKind.API,
                    client=client,  # noqa: B023
                    now=container.clock.now(),
                    staff=staff,
                ),
            )


def link_token(container: Container, email: str) -> str:
    container.deliver_notices()
    message = latest_message(container.settings.mail_path, to=email)
    assert message is not None
    found = re.search(r"/login/link#(tsl_\S+)", str(message.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    assert found is not None
    return found.group(1)


def test_at_the_account_limit_the_emailed_link_still_leads_to_the_second_factor(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """S2 + R5: after 100 failures the link replaces the password, never the factor."""
    email, owner = owner_of(container, home)
    enrol_totp(container, owner)
    fail_from_many_sources(container, email, 100)
    locked = waited(
        container,
        lambda: client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}),
    )
    assert locked.status_code == 401
    assert locked.json()["code"] == "sign_in_link_required"

    answer = client.post("/api/v1/auth/token/link", json={"token": link_token(container, email)})
    assert answer.status_code == 202
    assert answer.json()["status"] == "second_factor_required"
    assert "token" not in answer.json()


def test_a_new_challenge_closes_the_previous_one(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """Codes cannot be guessed on many open challenges at once (R5, S2)."""
    email, owner = owner_of(container, home)
    enrol_totp(container, owner)
    first = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    second = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    stale = client.post(
        "/api/v1/auth/token/factor",
        json={"challenge": first["challenge"], "code": TOTP.at(container.clock.now())},
    )
    assert stale.status_code == 401
    assert stale.json()["code"] == "challenge_expired"
    fresh = client.post(
        "/api/v1/auth/token/factor",
        json={"challenge": second["challenge"], "code": TOTP.at(container.clock.now())},
    )
    assert fresh.status_code == 201


def test_wrong_codes_count_against_the_account_until_they_need_the_mailbox(
    container: Container, home: CreatedHome
) -> None:
    """Every wrong second factor is an account failure (S2): spread over many sources and
    challenges, at most `account_link_after` guesses are checked without the mailbox (it
    used to be 100); then the password leads only to the emailed link."""
    email, owner = owner_of(container, home)
    enrol_totp(container, owner)
    gate = container.gate
    checked = 0
    for n in range(150):  # defended mode soon allows one guess per round, at its pace
        client = Client(address=f"198.{n}.0.9")  # a fresh network for every round
        with container.stores.session() as s:
            try:
                started = paced(
                    container,
                    lambda: gate.sign_in(
                        s,
                        email=email,
                        password=PASSWORD,
                        kind=SessionKind.API,
                        client=client,  # noqa: B023
                        now=container.clock.now(),
                    ),
                )
            except NotAuthenticated as refused:
                reason = refused.code
                break
        if started.status == "link_sent":
            reason = started.status
            break
        assert started.challenge is not None
        for _ in range(5):
            with container.stores.session() as s:
                try:
                    gate.complete_factor(
                        s,
                        challenge=started.challenge,
                        code=wrong_code(container),
                        recovery_code=None,
                        webauthn=None,
                        client=client,
                        now=container.clock.now(),
                    )
                except InvalidCredentials:
                    checked += 1
                except (NotAuthenticated, TooManyAttempts):
                    break
    else:
        pytest.fail("the account never reached its limit")
    assert reason == "link_sent"
    assert checked == LINK_AFTER


def test_a_stolen_session_cannot_guess_its_way_past_step_up(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """C7: five wrong step-up codes end the session itself."""
    email, owner = owner_of(container, home)
    enrol_totp(container, owner)
    started = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    token = client.post(
        "/api/v1/auth/token/factor",
        json={"challenge": started["challenge"], "code": TOTP.at(container.clock.now())},
    ).json()["token"]
    headers = {"authorization": f"Bearer {token}"}
    codes = []
    for _ in range(5):
        codes.append(
            client.post(
                "/api/v1/auth/step-up", json={"code": wrong_code(container)}, headers=headers
            )
        )
    assert [c.status_code for c in codes[:4]] == [401] * 4
    assert codes[4].json()["code"] == "session_ended"
    assert client.get("/api/v1/me", headers=headers).status_code == 401


@pytest.fixture
def camera_rule(settings: Settings, clock: FakeClock) -> Iterator[tuple[Container, TestClient]]:
    strict = settings.model_copy(update={"mfa_required_for_camera_viewers": True})
    built = build(strict, clock=clock)
    with TestClient(create_app(container=built)) as client:
        yield built, client
    built.close()


def test_the_password_alone_cannot_enrol_the_first_factor_from_a_new_device(
    camera_rule: tuple[Container, TestClient], home: CreatedHome
) -> None:
    """R5: a camera owner without a factor proves the mailbox before enrolling one."""
    container, client = camera_rule
    email = owner_email(home)
    answer = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 202
    assert answer.json()["status"] == "link_sent"
    opened = client.post("/api/v1/auth/token/link", json={"token": link_token(container, email)})
    assert opened.status_code == 201
    assert opened.json()["stage"] == "enrol"
    headers = {"authorization": f"Bearer {opened.json()['token']}"}
    assert (
        client.get("/api/v1/profiles", headers=headers).json()["code"] == "mfa_enrolment_required"
    )
    assert client.post("/api/v1/sessions/end-others", headers=headers).status_code == 403


def test_an_enrolment_session_goes_stale_once_a_factor_exists(
    camera_rule: tuple[Container, TestClient], home: CreatedHome
) -> None:
    """R5: a second enrolment session cannot mint recovery codes after the owner enrolled."""
    container, client = camera_rule
    email = owner_email(home)
    sessions = []
    for _ in range(2):
        client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        sessions.append(
            client.post(
                "/api/v1/auth/token/link", json={"token": link_token(container, email)}
            ).json()["token"]
        )
        container.clock.advance(timedelta(minutes=3))
    first, second = ({"authorization": f"Bearer {t}"} for t in sessions)
    begun = client.post("/api/v1/factors/totp", json={"label": "phone"}, headers=first).json()
    confirmed = client.post(
        f"/api/v1/factors/totp/{begun['factor_id']}/confirm",
        json={"code": pyotp.TOTP(begun["secret"]).at(container.clock.now())},
        headers=first,
    )
    assert confirmed.status_code == 200
    assert client.get("/api/v1/account/security", headers=first).json()["stage"] == "full"
    # The other enrolment session was ended when the first factor arrived.
    assert client.post("/api/v1/factors/recovery-codes", headers=second).status_code == 401


def test_a_known_device_is_forgotten_when_the_password_changes(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """S2: the old device cookie is not a way around the account's limit afterwards."""
    email, owner = owner_of(container, home)
    headers = sign_in(client, email)
    assert (
        client.post(
            "/api/v1/auth/step-up", json={"password": PASSWORD}, headers=headers
        ).status_code
        == 204
    )
    changed = client.post(
        "/api/v1/account/password",
        json={"current_password": PASSWORD, "new_password": "an entirely new river of words"},
        headers=headers,
    )
    assert changed.status_code == 201
    with container.stores.session() as s:
        left = s.scalars(select(KnownDevice).where(owner.where(KnownDevice))).all()
    assert left == []


def test_a_known_device_sending_wrong_passwords_stops_being_trusted(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """OWASP device cookies: each cookie gets a few tries, not the account's whole budget."""
    email = owner_email(home)
    sign_in(client, email)
    device = known_devices(client)[email]
    for i in range(10):
        container.clock.advance(timedelta(minutes=20))  # past the source's delay
        client.post(
            "/api/v1/auth/token",
            json={"email": email, "password": f"not it {i}"},
            headers={"x-tutela-device": device},
        )
    with container.stores.session() as s:
        assert s.scalars(select(KnownDevice)).all() == []


@pytest.mark.parametrize("path", ["/login/factor", "/login/link"])
def test_a_cross_site_form_cannot_sign_a_browser_in(client: TestClient, path: str) -> None:
    """Login CSRF: the second step refuses a form posted from another site."""
    answer = client.post(
        path,
        data={"challenge": "tsc_x", "code": "123456", "token": "tsl_x"},
        headers={"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_a_password_is_normalised_the_same_way_when_set_and_when_checked(
    container: Container, home: CreatedHome, client: TestClient
) -> None:
    """NIST SP 800-63B §5.1.1.2: NFKC at change and at sign-in, so the person gets in."""
    email = owner_email(home)
    headers = sign_in(client, email)
    client.post("/api/v1/auth/step-up", json={"password": PASSWORD}, headers=headers)
    fullwidth = "Ｃafé au lait on a quiet morning"
    changed = client.post(
        "/api/v1/account/password",
        json={"current_password": PASSWORD, "new_password": fullwidth},
        headers=headers,
    )
    assert changed.status_code == 201
    # The change forgot every known device: this sign-in confirms through the mailbox.
    assert sign_in(client, email, fullwidth)


def test_failures_for_emails_with_no_account_switch_on_defended_mode(container: Container) -> None:
    """R6: a stuffing list is mostly addresses with no account here; ten such failures in
    the detector's window are a list hit like ten breached passwords."""
    gate = container.gate
    now = container.clock.now()
    for n in range(9):
        with container.stores.session() as s, pytest.raises(InvalidCredentials):
            gate.sign_in(
                s,
                email=f"nobody{n}@example.com",
                password="whatever it is",
                kind=SessionKind.API,
                client=Client(address=f"203.0.{n}.1"),
                now=now,
            )
    assert not gate.throttle.defended(now.timestamp())
    with container.stores.session() as s, pytest.raises(InvalidCredentials) as refused:
        gate.sign_in(
            s,
            email="nobody9@example.com",
            password="whatever it is",
            kind=SessionKind.API,
            client=Client(address="203.0.9.1"),
            now=now,
        )
    assert gate.throttle.defended(now.timestamp())
    assert refused.value.notices_queued  # the security team's alert goes out with it
