"""Account recovery in the console (R5, R6): "Forgot your password?", the emailed link's
pages, the waiting reset an owner sees and cancels."""

from __future__ import annotations

import html
import json
from datetime import timedelta

import pyotp
from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email, sign_in
from tests.functional.test_console_privacy import console_sign_in
from tests.functional.test_recovery_api import (
    CANCEL_LINK,
    NEW_PASSWORD,
    RECOVER_LINK,
    SUBJECT_DELAYED,
    SUBJECT_RESET,
    clock_of,
    password_works,
    token_from,
    with_totp,
)
from tests.functional.test_sign_in_api import add_security_key, authenticator, mails, step_up
from tutela.container import Container
from tutela.households.service import CreatedHome

SENT = "If an account exists for that address, we sent it a link"


def forgot(client: TestClient, email: str) -> str:
    page = client.get("/forgot")
    assert page.status_code == 200 and 'action="/forgot"' in page.text
    r = client.post("/forgot", data={"email": email})
    assert r.status_code == 202, r.text
    return r.text


def open_link(client: TestClient, token: str) -> str:
    landing = client.get("/recover")
    assert 'src="/static/link.js"' in landing.text  # the token stays in the fragment
    r = client.post("/recover/open", data={"token": token})
    assert r.status_code == 200, r.text
    return r.text


def test_the_sign_in_page_offers_recovery(client: TestClient) -> None:
    assert 'href="/forgot"' in client.get("/login").text


def test_known_and_unknown_addresses_see_the_same_page(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    known = forgot(client, email)
    unknown = forgot(client, "nobody-" + email)
    assert SENT in known and known == unknown
    assert len(mails(container, to=email, subject=SUBJECT_RESET)) == 1


def test_a_new_password_through_the_link(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    forgot(client, email)
    token = token_from(container, email, SUBJECT_RESET, RECOVER_LINK)
    form = open_link(client, token)
    assert 'name="new_password"' in form and 'name="code"' not in form
    weak = client.post("/recover", data={"token": token, "new_password": "password"})
    assert weak.status_code == 422 and 'role="alert"' in weak.text
    done = client.post("/recover", data={"token": token, "new_password": NEW_PASSWORD})
    assert done.status_code == 200 and "Your password was changed" in done.text
    assert password_works(client, email, NEW_PASSWORD) == 201
    again = client.post("/recover/open", data={"token": token})
    assert again.status_code == 410 and "already used" in again.text


def test_an_expired_link_says_so(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    forgot(client, email)
    token = token_from(container, email, SUBJECT_RESET, RECOVER_LINK)
    clock_of(container).advance(timedelta(minutes=container.settings.recovery_link_minutes + 1))
    r = client.post("/recover/open", data={"token": token})
    assert r.status_code == 410 and "expired" in r.text and 'href="/forgot"' in r.text


def test_without_the_factor_the_reset_waits_and_the_owner_cancels_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    totp, _ = with_totp(client, container, email)
    forgot(client, email)
    token = token_from(container, email, SUBJECT_RESET, RECOVER_LINK)
    form = open_link(client, token)
    assert 'name="code"' in form and f"{container.settings.recovery_delay_days} days" in form
    waiting = client.post("/recover", data={"token": token, "new_password": NEW_PASSWORD})
    assert waiting.status_code == 202 and "Your new password is waiting" in waiting.text
    assert "is waiting" in client.post("/recover/open", data={"token": token}).text

    # The owner, signed in on their own device with password and factor, is told in the
    # console (home and the pending-reset page) and cancels.
    owner = TestClient(client.app)
    console_sign_in_with_factor(owner, container, email, totp)
    assert "A password reset of your account is waiting" in owner.get("/").text
    page = owner.get("/account/recovery")
    assert 'action="/account/recovery/cancel"' in page.text
    cancelled = owner.post("/account/recovery/cancel", follow_redirects=True)
    assert "No password reset of your account is waiting" in cancelled.text
    clock_of(container).advance(timedelta(days=container.settings.recovery_delay_days + 1))
    assert container.recovery_pass() == 0
    assert password_works(client, email, PASSWORD) == 202  # unchanged: factor still asked


def console_sign_in_with_factor(
    client: TestClient, container: Container, email: str, totp: pyotp.TOTP
) -> None:
    """The console's password form, then the authenticator code of the holder's app."""
    client.get("/login")
    r = client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf": client.cookies["tutela_csrf"]},
    )
    assert r.status_code == 202, r.text
    challenge = r.text.split('name="challenge" value="', 1)[1].split('"', 1)[0]
    clock_of(container).advance(timedelta(seconds=30))
    code = totp.at(container.clock.now())
    done = client.post(
        "/login/factor", data={"challenge": challenge, "code": code}, follow_redirects=False
    )
    assert done.status_code == 303, done.text


def test_the_cancel_link_of_the_notice(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    with_totp(client, container, email)
    forgot(client, email)
    token = token_from(container, email, SUBJECT_RESET, RECOVER_LINK)
    client.post("/recover", data={"token": token, "new_password": NEW_PASSWORD})
    cancel = token_from(container, email, SUBJECT_DELAYED, CANCEL_LINK)
    assert 'src="/static/link.js"' in client.get("/recover/cancel").text
    r = client.post("/recover/cancel", data={"token": cancel})
    assert r.status_code == 200 and "was cancelled" in r.text
    again = client.post("/recover/cancel", data={"token": cancel})
    assert again.status_code == 410


def test_a_signed_in_owner_without_a_pending_reset(client: TestClient, home: CreatedHome) -> None:
    console_sign_in(client, owner_email(home))
    assert "No password reset of your account is waiting" in client.get("/account/recovery").text


def test_cross_site_forms_are_refused(client: TestClient, home: CreatedHome) -> None:
    cross = {"sec-fetch-site": "cross-site"}
    for path, data in (
        ("/forgot", {"email": owner_email(home)}),
        ("/recover/open", {"token": "tsr_x"}),
        ("/recover", {"token": "tsr_x", "new_password": NEW_PASSWORD}),
        ("/recover/cancel", {"token": "tsx_x"}),
    ):
        r = client.post(path, data=data, headers=cross)
        assert r.status_code == 403, path


def test_a_passkey_in_the_console_recovers_at_once(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    headers = sign_in(client, email)
    step_up(client, headers, password=PASSWORD)
    key = authenticator(container)
    add_security_key(client, key, headers)
    forgot(client, email)
    token = token_from(container, email, SUBJECT_RESET, RECOVER_LINK)
    form = open_link(client, token)
    assert 'data-webauthn="get"' in form and 'src="/static/webauthn.js"' in form
    garbled = client.post(
        "/recover", data={"token": token, "new_password": NEW_PASSWORD, "webauthn": "{"}
    )
    assert garbled.status_code == 401 and "That code is not right" in garbled.text
    # The page shown again carries a fresh challenge: the browser answers that one.
    options = html.unescape(garbled.text.split('data-options="', 1)[1].split('"', 1)[0])
    proof = json.dumps(key.get(options))
    done = client.post(
        "/recover", data={"token": token, "new_password": NEW_PASSWORD, "webauthn": proof}
    )
    assert done.status_code == 200 and "Your password was changed" in done.text
