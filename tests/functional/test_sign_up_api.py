"""Sign-up: the whole new password checked with the reason given (S1, R7), and the same
answer whether or not the address already has an account (OWASP, S4), and the mailbox
proven by an emailed link before the new account's first session (R6)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import DEVICE_HEADER, emailed_link, owner_email, sign_in
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.notices.mail import latest_message

GOOD = "a walk by the cold river at dawn"


def sign_up(client: TestClient, email: str, password: str) -> tuple[int, dict[str, str]]:
    r = client.post(
        "/api/v1/signup", json={"name": "Rae Newcomer", "email": email, "password": password}
    )
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short", "password_too_short"),
        ("x" * 300, "password_too_long"),
        ("iloveyou", "password_breached"),
        ("qwerty123", "password_breached"),
        ("my tutela password", "password_context"),
        ("rae.newcomer and more", "password_context"),
        ("aaaaaaaaaaaa", "password_repetitive"),
    ],
)
def test_a_weak_password_is_refused_with_the_reason(
    client: TestClient, container: Container, password: str, code: str
) -> None:
    status, body = sign_up(client, "rae.newcomer@example.com", password)
    assert status == 422
    assert body["code"] == code
    assert password not in body["detail"]
    signed = client.post(
        "/api/v1/auth/token", json={"email": "rae.newcomer@example.com", "password": password}
    )
    assert signed.status_code == 401  # no account was made


def test_a_new_account_proves_its_mailbox_before_its_first_session(
    client: TestClient, container: Container
) -> None:
    """Sign-up opens no session: the link it mails does, and only then does the password
    sign in (from the device that followed it, R6)."""
    status, _ = sign_up(client, "Rae.Newcomer@Example.com", GOOD)
    assert status == 202
    mail = latest_message(container.settings.mail_path, to="rae.newcomer@example.com")
    assert mail is not None
    assert mail["subject"] == "Confirm your new Tutela account"
    sign_up_link = emailed_link(container, "rae.newcomer@example.com")

    # The password alone opens nothing yet, from any device: a link is mailed instead.
    before = client.post(
        "/api/v1/auth/token", json={"email": "rae.newcomer@example.com", "password": GOOD}
    )
    assert before.status_code == 202
    assert before.json() == {"status": "link_sent"}

    confirmed = client.post("/api/v1/auth/token/link", json={"token": sign_up_link})
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["stage"] == "full"
    me = client.get("/api/v1/me", headers={"authorization": f"Bearer {confirmed.json()['token']}"})
    assert me.json()["role"] == "owner"
    # The link works once.
    again = client.post("/api/v1/auth/token/link", json={"token": sign_up_link})
    assert again.status_code == 401

    # From the device that followed it, the password is enough from now on.
    known = client.post(
        "/api/v1/auth/token",
        json={"email": "rae.newcomer@example.com", "password": GOOD},
        headers={DEVICE_HEADER: confirmed.json()["device_token"]},
    )
    assert known.status_code == 201, known.text
    assert known.json()["stage"] == "full"


def test_an_existing_address_gets_the_same_answer_and_its_holder_a_notice(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    fresh = sign_up(client, "someone.else@example.com", GOOD)
    taken = sign_up(client, owner_email(home), GOOD)
    assert fresh == taken
    mail = latest_message(container.settings.mail_path, to=owner_email(home))
    assert mail is not None
    assert "tried to open a Tutela account" in str(mail["subject"])
    # The holder's password is untouched.
    assert sign_in(client, owner_email(home), PASSWORD)
