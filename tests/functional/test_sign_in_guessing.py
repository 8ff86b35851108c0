"""Guessing second factors with the password and the victim's known device (S2, S4, R6).

The attack from the review: the password and a stolen known-device token, then wrong TOTP
codes as fast as the service answers them. Every guess now counts toward the account, from
any device; time moves with the container's FakeClock.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD
from tests.functional.conftest import console_sign_in, owner_email
from tests.functional.test_sign_in_api import (
    API,
    Holder,
    follow_link,
    link_token,
    next_code,
    second_factor,
    sign_in,
    signed_in,
    totp_holder,
    wrong_code,
)
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.identity.logins import KNOWN_DEVICE_MAX_FAILURES, MAX_FACTOR_TRIES
from tutela.identity.models import KnownDevice, SessionKind
from tutela.identity.signin import Client
from tutela.identity.throttle import LINK_AFTER, Attempt


@pytest.fixture
def holder(client: TestClient, container: Container, home: CreatedHome) -> Holder:
    return totp_holder(client, container, owner_email(home))


_rounds = itertools.count()


def known_devices(container: Container) -> int:
    with container.stores.session() as s:
        return s.scalar(select(func.count()).select_from(KnownDevice)) or 0


def guess_codes(
    client: TestClient, container: Container, holder: Holder, *, attempts: int
) -> list[httpx.Response]:
    """Up to `attempts` wrong codes, each on a challenge opened with the password and the
    victim's device token; the answer to every code sent (or to the sign-in refusing it).

    Every round comes from a fresh network, as from a botnet: source delays never bite,
    only the account's rules do.
    """
    assert isinstance(container.clock, FakeClock)
    answers: list[httpx.Response] = []
    while len(answers) < attempts:
        n = next(_rounds)
        client = TestClient(client.app, client=(f"10.{n // 250 % 250}.{n % 250}.9", 50000))
        container.clock.advance(timedelta(seconds=5))  # below the stuffing detector's rate
        started = sign_in(client, holder.email, device=holder.device)
        if started.status_code != 202 or started.json()["status"] != "second_factor_required":
            answers.append(started)  # no challenge, so the guess is not even sent
            continue
        for _ in range(MAX_FACTOR_TRIES):
            container.clock.advance(timedelta(seconds=5))
            answer = second_factor(
                client,
                started.json()["challenge"],
                code=wrong_code(container, holder.totp),
                device=holder.device,
            )
            answers.append(answer)
            if answer.json().get("code") != "invalid_second_factor" or len(answers) >= attempts:
                break
    return answers


def test_the_101st_wrong_code_from_a_known_device_is_refused(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """S2 (NIST SP 800-63B §5.2.2): at most 100 consecutive failures per account, from a
    known device too; it used to check 111 codes at 88/s and then let the right one in.
    Long before 100, the codes stop being checked without the mailbox."""
    answers = guess_codes(client, container, holder, attempts=101)

    checked = [a for a in answers if a.json().get("code") == "invalid_second_factor"]
    assert len(checked) == LINK_AFTER < 100
    assert answers[100].status_code != 201
    assert answers[100].json().get("code") != "invalid_second_factor"
    assert all(a.status_code != 201 for a in answers)
    # After the last checked code, the password and the device lead only to the mailbox.
    after = answers[answers.index(checked[-1]) + 1 :]
    assert after and all(
        a.json().get("status") == "link_sent" or a.json().get("code") == "sign_in_link_required"
        for a in after
    )


def test_well_before_the_limit_the_right_code_from_the_known_device_does_not_suffice(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """S2's challenge before the limit: after `account_link_after` failures the password,
    the victim's device and even the right code do not open a session by themselves."""
    guess_codes(client, container, holder, attempts=LINK_AFTER)

    started = sign_in(client, holder.email, device=holder.device)
    assert started.status_code == 202, started.text
    assert started.json() == {"status": "link_sent"}


def test_a_challenge_opened_before_the_threshold_no_longer_takes_a_code(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """A challenge already open when the account crosses `account_link_after` checks no
    code either: the right one is refused, and the emailed link is sent instead."""
    guess_codes(client, container, holder, attempts=LINK_AFTER - 1)
    started = sign_in(client, holder.email, device=holder.device)
    challenge = started.json()["challenge"]
    last_wrong = second_factor(
        client, challenge, code=wrong_code(container, holder.totp), device=holder.device
    )
    assert last_wrong.json()["code"] == "invalid_second_factor"

    right = second_factor(
        client, challenge, code=next_code(container, holder.totp), device=holder.device
    )
    assert right.status_code == 401, right.text
    assert right.json()["code"] == "sign_in_link_required"


def test_a_known_device_is_forgotten_after_ten_wrong_codes(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """The 10-failures rule of a known device counts codes, not only passwords (S2)."""
    assert known_devices(container) == 1
    guess_codes(client, container, holder, attempts=KNOWN_DEVICE_MAX_FAILURES - 1)
    assert known_devices(container) == 1
    guess_codes(client, container, holder, attempts=1)
    assert known_devices(container) == 0


def test_the_holder_still_gets_in_through_the_mailbox_and_the_factor(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """R6: the guessing never locks the holder out: the emailed link, then the right code."""
    guess_codes(client, container, holder, attempts=101)

    refused = sign_in(client, holder.email, device=holder.device)
    assert refused.status_code in {202, 401}, refused.text
    started = follow_link(client, link_token(container, holder.email))
    assert started.status_code == 202, started.text
    code = next_code(container, holder.totp)
    signed_in(second_factor(client, started.json()["challenge"], code=code))


def account_failures(container: Container, email: str) -> int:
    gate = container.gate
    now = container.clock.now()
    attempt = Attempt(account=gate._account_key(email, staff=False, now=now), source="192.0.2.1")
    return gate.throttle.check(attempt, now.timestamp()).account_failures


def test_wrong_recovery_codes_count_toward_the_account(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """Recovery codes are guesses too (S2): from the known device, they count like codes."""
    assert isinstance(container.clock, FakeClock)
    sent = 0
    while sent < LINK_AFTER:
        n = next(_rounds)
        client = TestClient(client.app, client=(f"10.{n // 250 % 250}.{n % 250}.9", 50000))
        started = sign_in(client, holder.email, device=holder.device)
        assert started.json()["status"] == "second_factor_required", started.text
        for _ in range(MAX_FACTOR_TRIES):
            container.clock.advance(timedelta(seconds=5))
            r = client.post(
                f"{API}/auth/token/factor",
                json={"challenge": started.json()["challenge"], "recovery_code": "abcd-efgh"},
                headers={"x-tutela-device": holder.device},
            )
            assert r.json()["code"] == "invalid_second_factor", r.text
            sent += 1
    assert account_failures(container, holder.email) == LINK_AFTER
    fresh = TestClient(client.app, client=("192.0.2.200", 50000))
    assert sign_in(fresh, holder.email, device=holder.device).json() == {"status": "link_sent"}


def test_a_used_or_wrong_link_counts_as_a_failure(
    client: TestClient, container: Container, holder: Holder
) -> None:
    """An emailed link that was used already counts toward its account; one that names no
    account counts toward its source (S2, S4)."""
    guess_codes(client, container, holder, attempts=LINK_AFTER)
    assert sign_in(client, holder.email, device=holder.device).json() == {"status": "link_sent"}
    token = link_token(container, holder.email)
    assert follow_link(client, token).status_code == 202
    before = account_failures(container, holder.email)

    again = follow_link(client, token)
    assert again.status_code == 401
    assert again.json()["code"] == "challenge_expired"
    assert account_failures(container, holder.email) == before + 1

    stranger = TestClient(client.app, client=("203.0.113.80", 50000))
    for n in range(5):
        assert follow_link(stranger, f"tsl_not-a-link-{n}").status_code == 401
    slowed = follow_link(stranger, "tsl_not-a-link-5")
    assert slowed.status_code == 429
    assert int(slowed.headers["retry-after"]) >= 1
    assert account_failures(container, holder.email) == before + 1


# --- sign-out can forget the device ("this is a shared computer") --------------------------


def password_holder(client: TestClient, home: CreatedHome) -> tuple[str, dict[str, str], str]:
    """The home's owner signed in with a password: (email, headers, device token)."""
    email = owner_email(home)
    r = sign_in(client, email)
    return email, signed_in(r), str(r.json()["device_token"])


def test_signing_out_of_the_api_can_forget_the_device(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email, headers, device = password_holder(client, home)
    kept = client.delete(f"{API}/auth/token", headers=headers)
    assert kept.status_code == 204
    assert known_devices(container) == 1  # a plain sign-out keeps the device

    again = sign_in(client, email, device=device)
    assert again.json()["device_token"] is None  # still the same, known device
    ended = client.delete(
        f"{API}/auth/token",
        params={"forget_device": "true"},
        headers={**signed_in(again), "x-tutela-device": device},
    )
    assert ended.status_code == 204
    assert known_devices(container) == 0
    # Forgotten: the same token is now a device Tutela has not seen, so the mailbox (R6).
    assert sign_in(client, email, device=device).json() == {"status": "link_sent"}


def test_forgetting_leaves_another_accounts_device_alone(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    _, mine, _ = password_holder(client, home)
    _, _, theirs = password_holder(client, other_home)
    r = client.delete(
        f"{API}/auth/token",
        params={"forget_device": "true"},
        headers={**mine, "x-tutela-device": theirs},
    )
    assert r.status_code == 204
    assert known_devices(container) == 2


def test_ending_all_sessions_forgets_every_known_device(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email, _, _ = password_holder(client, home)
    password_holder(client, home)
    mine = signed_in(sign_in(client, email))
    assert known_devices(container) == 3

    r = client.post(f"{API}/sessions/end-others", headers=mine)
    assert r.status_code == 200
    assert known_devices(container) == 0


def test_the_console_signs_out_of_a_shared_computer(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    assert client.cookies.get("tutela_device")
    assert 'name="forget_device"' in client.get("/").text
    assert "This is a shared computer" in client.get("/").text

    r = client.post(
        "/logout",
        data={"forget_device": "1"},
        headers={"origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert known_devices(container) == 0
    assert not client.cookies.get("tutela_device")
    assert client.get("/", follow_redirects=False).status_code == 303  # signed out


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"referer": "https://evil.example/page"},
        {"sec-fetch-site": "cross-site"},
    ],
)
def test_a_cross_site_form_cannot_sign_the_console_out(
    client: TestClient, container: Container, home: CreatedHome, headers: dict[str, str]
) -> None:
    console_sign_in(client, owner_email(home))
    r = client.post("/logout", data={"forget_device": "1"}, headers=headers)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "cross_site_request"
    assert known_devices(container) == 1
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in


def test_the_console_sign_out_accepts_the_public_url_as_origin(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    r = client.post(
        "/logout",
        headers={"referer": container.settings.origin + "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert known_devices(container) == 1  # not asked to forget it


# --- checking and recording as one step -------------------------------------------------------


def test_an_attempt_that_fails_midway_leaves_no_reservation_behind(
    container: Container, home: CreatedHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that ends without a verdict (here the hash raises) releases its slot:
    it neither counts as a failure nor keeps slowing its source (S2, S4)."""
    email = owner_email(home)

    def broken(stored: str | None, password: str) -> bool:
        raise RuntimeError("hasher down")

    monkeypatch.setattr(container.hasher, "verify", broken)
    client = Client(address="203.0.113.90")
    for _ in range(container.settings.signin_source_free_failures + 3):
        with container.stores.session() as s, pytest.raises(RuntimeError):
            container.gate.sign_in(
                s,
                email=email,
                password=PASSWORD,
                kind=SessionKind.API,
                client=client,
                now=container.clock.now(),
            )
    assert account_failures(container, email) == 0
    assert container.throttle.source_wait("203.0.113.90", container.clock.now().timestamp()) == 0
