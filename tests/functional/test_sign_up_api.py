"""Sign-up: the whole new password checked with the reason given (S1, R7), and the same
answer whether or not the address already has an account (OWASP, S4)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email
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


def test_a_new_account_can_sign_in_and_owns_its_household(client: TestClient) -> None:
    status, _ = sign_up(client, "Rae.Newcomer@Example.com", GOOD)
    assert status == 202
    signed = client.post(
        "/api/v1/auth/token", json={"email": "rae.newcomer@example.com", "password": GOOD}
    )
    assert signed.status_code == 201, signed.text
    me = client.get("/api/v1/me", headers={"authorization": f"Bearer {signed.json()['token']}"})
    assert me.json()["role"] == "owner"


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
    signed = client.post(
        "/api/v1/auth/token", json={"email": owner_email(home), "password": PASSWORD}
    )
    assert signed.status_code == 201
