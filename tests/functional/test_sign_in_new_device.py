"""No session from an unknown device on a password alone (R6), from the first attempt.

Credential stuffing is right on its first try, so this rule waits for no failure, no
detector and no defended mode: an account without a second factor, signing in from a
device Tutela has not seen, gets an emailed link instead of a session; the device that
follows it is known from then on and signs in with the password.
"""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import DEVICE_HEADER, console_sign_in, owner_email
from tests.functional.test_sign_in_api import SUBJECT_LINK, SUBJECT_NEW_DEVICE, mails
from tests.mailbox import emailed_link
from tutela.container import Container
from tutela.households.service import CreatedHome

API = "/api/v1"


def password_step(client: TestClient, email: str, device: str | None = None) -> httpx.Response:
    headers = {DEVICE_HEADER: device} if device else {}
    return client.post(
        f"{API}/auth/token", json={"email": email, "password": PASSWORD}, headers=headers
    )


def no_session(r: httpx.Response) -> bool:
    return r.status_code == 202 and r.json() == {"status": "link_sent"}


def test_a_password_from_an_unknown_device_gets_no_session_until_the_mailbox_confirms(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    # The first attempt, in normal mode, with no failure anywhere: no token, a link.
    assert no_session(password_step(client, email))
    assert no_session(password_step(client, email))
    assert len(mails(container, to=email, subject=SUBJECT_LINK)) == 1  # one link, not a flood
    assert mails(container, to=email, subject=SUBJECT_NEW_DEVICE) == []

    confirmed = client.post(
        f"{API}/auth/token/link", json={"token": emailed_link(container, email)}
    )
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["stage"] == "full"
    device = confirmed.json()["device_token"]
    assert device
    me = client.get(f"{API}/me", headers={"authorization": f"Bearer {confirmed.json()['token']}"})
    assert me.status_code == 200
    assert len(mails(container, to=email, subject=SUBJECT_NEW_DEVICE)) == 1

    # Next time, from the confirmed device: the password opens a session, no mail.
    again = password_step(client, email, device=device)
    assert again.status_code == 201, again.text
    assert again.json()["stage"] == "full"
    assert again.json()["device_token"] is None  # the same device, not a new one
    assert len(mails(container, to=email, subject=SUBJECT_LINK)) == 1

    # Another device still confirms through the mailbox.
    assert no_session(password_step(client, email, device="tsd_not-a-device-we-know"))


def test_a_known_device_of_another_account_does_not_count(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    other = owner_email(other_home)
    password_step(client, other)
    device = client.post(
        f"{API}/auth/token/link", json={"token": emailed_link(container, other)}
    ).json()["device_token"]
    assert no_session(password_step(client, owner_email(home), device=device))


def test_the_console_from_a_new_browser_confirms_through_the_mailbox(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    client.get("/login")
    answer = client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf": client.cookies["tutela_csrf"]},
        follow_redirects=False,
    )
    assert answer.status_code == 202
    assert "Check your email" in answer.text
    assert "tutela_session" not in answer.cookies
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"

    landed = client.post(
        "/login/link", data={"token": emailed_link(container, email)}, follow_redirects=False
    )
    assert (landed.status_code, landed.headers["location"]) == (303, "/")
    assert client.cookies.get("tutela_device")
    client.post("/logout")

    # The same browser, known now: the password alone signs in.
    known = console_sign_in(client, email)
    assert known.headers["location"] == "/"
    assert len(mails(container, to=email, subject=SUBJECT_LINK)) == 1
