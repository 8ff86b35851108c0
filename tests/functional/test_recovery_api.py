"""Account recovery through the API (R5, R6, S1, S2, S4): an emailed single-use link that
expires, never revealing an account, never skipping a second factor."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import PASSWORD
from tests.functional.conftest import owner_email, sign_in
from tests.functional.test_sign_in_api import (
    add_security_key,
    add_totp,
    authenticator,
    body,
    from_source,
    mails,
    next_code,
    step_up,
    wrong_code,
)
from tests.functional.test_staff import staff_add
from tests.mailbox import emailed_link
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.identity.logins import MAX_FACTOR_TRIES, Client
from tutela.identity.recovery_models import AccountRecovery
from tutela.identity.throttle import Attempt
from tutela.notices.models import OutboxMessage
from tutela.notices.service import NoticeKind

API = "/api/v1/auth/recovery"
NEW_PASSWORD = "walnut orbit candle meadow"
RECOVER_LINK = re.compile(r"/recover#(tsr_[A-Za-z0-9_\-]+)")
CANCEL_LINK = re.compile(r"/recover/cancel#(tsx_[A-Za-z0-9_\-]+)")
SUBJECT_RESET = "Reset your Tutela password"
SUBJECT_DELAYED = "Someone asked to reset your Tutela password"
SUBJECT_CANCELLED = "A password reset of your Tutela account was cancelled"
SUBJECT_RECOVERED = "Your Tutela account was recovered"


def clock_of(container: Container) -> FakeClock:
    assert isinstance(container.clock, FakeClock)
    return container.clock


def token_from(container: Container, email: str, subject: str, pattern: re.Pattern[str]) -> str:
    found = mails(container, to=email, subject=subject)
    assert found, f"no '{subject}' email"
    match = pattern.search(body(found[-1]))
    assert match is not None
    return match.group(1)


def ask(client: TestClient, email: str) -> str:
    r = client.post(API, json={"email": email})
    assert r.status_code == 202, r.text
    return r.text


def recovery_token(client: TestClient, container: Container, email: str) -> str:
    ask(client, email)
    return token_from(container, email, SUBJECT_RESET, RECOVER_LINK)


def complete(client: TestClient, token: str, **extra: object) -> dict[str, object]:
    r = client.post(f"{API}/complete", json={"token": token, "new_password": NEW_PASSWORD, **extra})
    return {**r.json(), "http": r.status_code}


def password_works(client: TestClient, email: str, password: str) -> int:
    """201 when `password` opens a session: from this device Tutela has not seen, through
    the emailed link that follows a right password (R6); else the refusal's status."""
    r = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    if r.status_code == 202 and r.json() == {"status": "link_sent"}:
        container: Container = client.app.state.container  # type: ignore[attr-defined]
        r = client.post("/api/v1/auth/token/link", json={"token": emailed_link(container, email)})
    return r.status_code


def test_known_and_unknown_addresses_get_the_same_answer(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    known = ask(client, email)
    unknown = ask(client, "nobody-" + email)
    assert known == unknown
    assert len(mails(container, to=email, subject=SUBJECT_RESET)) == 1
    assert mails(container, to="nobody-" + email) == []


def test_a_link_resets_the_password_once_and_ends_every_session(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    before = sign_in(client, email)
    token = recovery_token(client, container, email)
    opened = client.post(f"{API}/start", json={"token": token})
    assert opened.status_code == 200 and opened.json()["factor_required"] is False

    assert complete(client, token)["http"] == 200
    assert client.get("/api/v1/sessions", headers=before).status_code == 401  # R6
    assert password_works(client, email, PASSWORD) == 401
    assert password_works(client, email, NEW_PASSWORD) == 201
    assert mails(container, to=email, subject=SUBJECT_RECOVERED)

    again = complete(client, token)
    assert again["http"] == 410 and again["code"] == "recovery_link_used"


def test_a_link_expires(client: TestClient, container: Container, home: CreatedHome) -> None:
    email = owner_email(home)
    token = recovery_token(client, container, email)
    clock_of(container).advance(timedelta(minutes=container.settings.recovery_link_minutes + 1))
    opened = client.post(f"{API}/start", json={"token": token})
    assert opened.status_code == 410 and opened.json()["code"] == "recovery_link_expired"
    assert complete(client, token)["code"] == "recovery_link_expired"
    assert password_works(client, email, PASSWORD) == 201


def test_a_made_up_link_is_refused(client: TestClient) -> None:
    r = client.post(f"{API}/start", json={"token": "tsr_not-a-real-token"})
    assert r.status_code == 401 and r.json()["code"] == "recovery_link_invalid"
    assert r.headers["content-type"].startswith("application/problem+json")


def test_one_email_per_window_and_a_new_link_replaces_the_old(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    first = recovery_token(client, container, email)
    ask(client, email)
    assert len(mails(container, to=email, subject=SUBJECT_RESET)) == 1
    clock_of(container).advance(timedelta(minutes=container.settings.recovery_email_minutes + 1))
    second = recovery_token(client, container, email)
    assert second != first
    assert complete(client, first)["code"] == "recovery_link_expired"
    assert complete(client, second)["http"] == 200


def test_a_weak_password_is_refused_and_the_link_still_works(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    token = recovery_token(client, container, email)
    r = client.post(f"{API}/complete", json={"token": token, "new_password": "password"})
    assert r.status_code == 422  # S1, the reason given by the password rules
    assert complete(client, token)["http"] == 200


def test_requests_are_throttled_like_sign_in_for_any_address(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    free = container.settings.signin_source_free_failures
    for n in range(free):
        ask(client, f"someone-{n}@example.org")
    for address in (email, "nobody@example.org"):
        r = client.post(API, json={"email": address})
        assert r.status_code == 429 and r.json()["code"] == "too_many_attempts"
        assert float(r.headers["retry-after"]) > 0
    assert mails(container, to=email) == []
    # Another network is not slowed down.
    assert from_source(client, "198.51.100.7").post(API, json={"email": email}).status_code == 202


# --- a second factor is never skipped ----------------------------------------------------


def with_totp(
    client: TestClient, container: Container, email: str
) -> tuple[pyotp.TOTP, dict[str, str]]:
    headers = sign_in(client, email)
    step_up(client, headers, password=PASSWORD)
    totp, _ = add_totp(client, container, headers)
    return totp, headers


def account_failures(container: Container, email: str) -> int:
    key = container.gate._account_key(email, staff=False, now=container.clock.now())
    verdict = container.throttle.check(
        Attempt(account=key, source="203.0.113.9"), container.clock.now().timestamp()
    )
    return verdict.account_failures


def test_with_a_factor_the_right_code_resets_at_once(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    totp, _ = with_totp(client, container, email)
    token = recovery_token(client, container, email)
    opened = client.post(f"{API}/start", json={"token": token}).json()
    assert opened["factor_required"] is True and "totp" in opened["factors"]
    assert complete(client, token, code=next_code(container, totp))["http"] == 200
    r = client.post("/api/v1/auth/token", json={"email": email, "password": NEW_PASSWORD})
    assert r.status_code == 202 and r.json()["status"] == "second_factor_required"


def test_a_wrong_code_counts_for_the_account_and_the_link_dies(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    totp, _ = with_totp(client, container, email)
    token = recovery_token(client, container, email)
    before = account_failures(container, email)
    wrong = complete(client, token, code=wrong_code(container, totp))
    assert wrong["http"] == 401 and wrong["code"] == "invalid_second_factor"
    assert account_failures(container, email) == before + 1  # S2
    assert mails(container, to=email, subject="Someone entered your Tutela password")  # S4
    # From other networks, so that only the link's own limit is seen.
    for n in range(MAX_FACTOR_TRIES - 1):
        elsewhere = from_source(client, f"198.51.{n}.7")
        complete(elsewhere, token, code=wrong_code(container, totp))
    assert account_failures(container, email) == before + MAX_FACTOR_TRIES
    elsewhere = from_source(client, "198.51.99.7")
    last = complete(elsewhere, token, code=next_code(container, totp))
    assert last["http"] == 410 and last["code"] == "recovery_link_used"
    assert password_works(elsewhere, email, PASSWORD) == 202


def test_without_the_factor_the_reset_waits_and_the_worker_completes_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    _, headers = with_totp(client, container, email)
    token = recovery_token(client, container, email)
    waiting = complete(client, token)
    assert waiting["http"] == 202
    until = datetime.fromisoformat(str(waiting["delay_until"]))
    days = container.settings.recovery_delay_days
    assert until == clock_of(container).now() + timedelta(days=days)
    # Every channel: an email with a cancel link, and the signed-in owner sees it.
    assert mails(container, to=email, subject=SUBJECT_DELAYED)
    pending = client.get(f"{API}/pending", headers=headers).json()
    assert pending["pending"] is True
    # Nothing changed yet: the old password still needs the factor.
    assert password_works(client, email, NEW_PASSWORD) == 401
    assert client.post(f"{API}/start", json={"token": token}).json()["status"] == "delayed"

    clock_of(container).advance(timedelta(days=days) - timedelta(minutes=1))
    assert container.recovery_pass() == 0
    clock_of(container).advance(timedelta(minutes=2))
    assert container.recovery_pass() == 1
    assert container.recovery_pass() == 0  # once
    assert client.get(f"{API}/pending", headers=headers).status_code == 401  # sessions ended
    # The factor that was lost is removed: the new password signs in (then enrols again).
    assert password_works(client, email, NEW_PASSWORD) == 201
    assert mails(container, to=email, subject=SUBJECT_RECOVERED)


def test_the_owner_cancels_with_the_notice_link(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    with_totp(client, container, email)
    token = recovery_token(client, container, email)
    assert complete(client, token)["http"] == 202
    cancel = token_from(container, email, SUBJECT_DELAYED, CANCEL_LINK)
    r = client.post(f"{API}/cancel", json={"token": cancel})
    assert r.status_code == 200 and r.json() == {"status": "cancelled"}
    assert mails(container, to=email, subject=SUBJECT_CANCELLED)
    again = client.post(f"{API}/cancel", json={"token": cancel})
    assert again.status_code == 410 and again.json()["code"] == "recovery_link_used"
    clock_of(container).advance(timedelta(days=container.settings.recovery_delay_days + 1))
    assert container.recovery_pass() == 0
    assert password_works(client, email, PASSWORD) == 202  # unchanged, factor still asked


def test_a_signed_in_owner_cancels_the_pending_reset(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    _, headers = with_totp(client, container, email)
    assert complete(client, recovery_token(client, container, email))["http"] == 202
    r = client.delete(f"{API}/pending", headers=headers)
    assert r.status_code == 200 and r.json()["pending"] is False
    assert client.get(f"{API}/pending", headers=headers).json()["pending"] is False
    clock_of(container).advance(timedelta(days=container.settings.recovery_delay_days + 1))
    assert container.recovery_pass() == 0


def test_no_delay_configured_means_the_factor_is_required(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    with_totp(client, container, email)
    container.settings.recovery_delay_days = 0
    refused = complete(client, recovery_token(client, container, email))
    assert refused["http"] == 403 and refused["code"] == "factor_required"


# --- two requests at once send one email (both stores) ------------------------------------


@pytest.mark.parametrize("threads", [8])
def test_simultaneous_requests_send_one_email(
    container: Container, home: CreatedHome, threads: int
) -> None:
    email = owner_email(home)
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            with container.stores.session() as session:
                start.wait()
                container.recovery.request(
                    session,
                    email=email,
                    client=Client(address=f"192.0.2.{n + 1}"),
                    now=container.clock.now(),
                )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with container.stores.session() as session:
        links = session.scalar(select(func.count()).select_from(AccountRecovery))
        queued = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.kind == NoticeKind.PASSWORD_RESET_LINK)
        )
    assert (links, queued) == (1, 1)


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI, pointed at the stores and the key file of `container`."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def test_an_employee_address_gets_the_same_answer_and_no_email(
    client: TestClient, container: Container, runner: CliRunner, unique: str
) -> None:
    """Employees have no self-service recovery (R4): their security team resets them."""
    email = f"sam.{unique}@operator.example"
    staff_add(runner, email, "support")
    sent_before = len(mails(container, to=email))
    assert ask(client, email) == ask(client, "nobody-" + email)
    assert len(mails(container, to=email)) == sent_before


def test_a_passkey_recovers_at_once(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    headers = sign_in(client, email)
    step_up(client, headers, password=PASSWORD)
    key = authenticator(container)
    add_security_key(client, key, headers)
    token = recovery_token(client, container, email)
    opened = client.post(f"{API}/start", json={"token": token}).json()
    assert opened["factor_required"] is True and opened["webauthn"] is not None
    forged = key.get(json.dumps(opened["webauthn"]), origin="https://evil.example")
    assert complete(client, token, webauthn=forged)["http"] == 401
    proof = key.get(json.dumps(opened["webauthn"]))
    assert complete(client, token, webauthn=proof)["http"] == 200
    assert client.get("/api/v1/sessions", headers=headers).status_code == 401
