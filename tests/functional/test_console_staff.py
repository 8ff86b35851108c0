"""Employees sign in on the console's staff area (R4), and customers' sign-in sends them there.

An employee's password is only the first step: a second factor always follows, a passkey
or security key for roles that reach customer content. An employee at the customers'
door is told where to go only once their password is right (S2, S4: nothing more leaks).
"""

from __future__ import annotations

import html
import json
import re

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.functional.test_sign_in_api import (
    API,
    add_security_key,
    authenticator,
    from_source,
    next_code,
    sign_in,
)
from tests.softauthn import SoftAuthenticator
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.identity.staff import add_staff
from tutela.identity.throttle import Attempt

NEW_PASSWORD = "lantern over the harbour wall"
GENERIC = "The email or password is not right."


def employee(container: Container, email: str, *roles: str) -> str:
    """A new employee, as `tutela staff add` makes them; their one-time password."""
    with container.stores.session() as s:
        added = add_staff(
            s,
            container.vault.keys,
            container.hasher,
            email=email,
            roles=list(roles),
            now=container.clock.now(),
        )
    return added.initial_password


def csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def staff_login(client: TestClient, email: str, password: str) -> httpx.Response:
    token = csrf(client, "/staff/login")
    return client.post(
        "/staff/login",
        data={"email": email, "password": password, "csrf": token},
        follow_redirects=False,
    )


def customer_login(client: TestClient, email: str, password: str) -> httpx.Response:
    token = csrf(client, "/login")
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf": token},
        follow_redirects=False,
    )


def challenge_of(page: httpx.Response) -> str:
    found = re.search(r'name="challenge" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def enrol_totp(client: TestClient, container: Container) -> pyotp.TOTP:
    """Add an authenticator app on the staff security page, from its QR code's URI."""
    page = client.post("/account/totp")
    assert page.status_code == 200
    assert '<figure class="qr" id="totp-qr"><svg' in page.text
    link = re.search(r'id="totp-link" href="([^"]+)"', page.text)
    assert link is not None
    uri = html.unescape(link.group(1))
    assert uri.startswith("otpauth://totp/Tutela:")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    key = re.search(r'id="totp-secret" class="key">([A-Z2-7 ]+)<', page.text)
    assert key is not None and key.group(1).replace(" ", "") == totp.secret
    action = re.search(r'action="(/account/totp/[^"]+/confirm)"', page.text)
    assert action is not None
    confirmed = client.post(action.group(1), data={"code": totp.at(container.clock.now())})
    assert confirmed.status_code == 200, confirmed.text
    assert "Authenticator app added" in confirmed.text
    return totp


def change_password(client: TestClient, current: str) -> httpx.Response:
    return client.post(
        "/account/password",
        data={"current_password": current, "new_password": NEW_PASSWORD},
        follow_redirects=False,
    )


def test_support_employee_enrols_an_authenticator_and_signs_in_with_it(
    client: TestClient, container: Container, unique: str
) -> None:
    """R4: the first sign-in can only enrol a factor; later sign-ins need it; the staff
    home is reached only with a full session."""
    email = f"sam.{unique}@operator.example"
    initial = employee(container, email, "support")

    first = staff_login(client, email, initial)
    assert first.status_code == 303
    assert first.headers["location"] == "/staff/security"
    assert client.get("/staff", follow_redirects=False).headers["location"] == "/staff/security"
    page = client.get("/staff/security")
    assert page.status_code == 200
    assert "Employees sign in with a second factor." in page.text
    assert "staff console" in page.text  # the staff area's frame, not the household's
    assert 'action="/staff/logout"' in page.text

    totp = enrol_totp(client, container)
    page = client.get("/staff/security")
    assert "Choose your own password" in page.text  # the given one must go
    changed = change_password(client, initial)
    assert changed.status_code == 303
    assert changed.headers["location"] == "/staff"

    home = client.get("/staff")
    assert home.status_code == 200
    assert "Staff console" in home.text
    assert "Support" in home.text
    assert 'href="/staff/security"' in home.text
    assert "Coming here" in home.text
    # An employee session is no customer's: the household console sends it to its own.
    assert client.get("/", follow_redirects=False).headers["location"] == "/staff"
    assert client.get(f"{API}/me").json()["code"] == "customer_session_required"

    out = client.post("/staff/logout", follow_redirects=False)
    assert out.headers["location"] == "/staff/login"
    assert client.get("/staff", follow_redirects=False).headers["location"] == "/staff/login"

    second = staff_login(client, email, NEW_PASSWORD)
    assert second.status_code == 202
    assert 'action="/staff/login/factor"' in second.text
    assert "recovery codes" in second.text
    wrong = client.post(
        "/staff/login/factor",
        data={"challenge": challenge_of(second), "code": "000000"},
        follow_redirects=False,
    )
    assert wrong.status_code == 401
    assert "did not confirm it is you" in wrong.text
    done = client.post(
        "/staff/login/factor",
        data={"challenge": challenge_of(wrong), "code": next_code(container, totp)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/staff"
    assert client.get("/staff").status_code == 200


def test_a_privacy_officer_needs_a_passkey_and_signs_in_with_it_only(
    client: TestClient, container: Container, unique: str
) -> None:
    """R4: a role with a path to customer content enrols WebAuthn; an authenticator app
    neither completes the enrolment nor signs in; the factor page offers the passkey only."""
    email = f"pia.{unique}@operator.example"
    initial = employee(container, email, "privacy_officer")
    assert staff_login(client, email, initial).headers["location"] == "/staff/security"
    page = client.get("/staff/security")
    assert "Your role reaches customer content: add a passkey or security key" in page.text
    assert 'data-next="/staff/security"' in page.text  # webauthn.js comes back here

    enrol_totp(client, container)
    assert "Your role reaches customer content" in client.get("/staff/security").text
    key: SoftAuthenticator = authenticator(container)
    add_security_key(client, key, {})  # what webauthn.js does, with the session cookie
    assert change_password(client, initial).headers["location"] == "/staff"
    client.post("/staff/logout")

    started = staff_login(client, email, NEW_PASSWORD)
    assert started.status_code == 202
    assert "only a passkey or security key signs you in" in started.text
    assert 'name="code"' not in started.text
    options = re.search(r'data-options="([^"]+)"', started.text)
    assert options is not None
    answer = key.get(html.unescape(options.group(1)))
    done = client.post(
        "/staff/login/factor",
        data={"challenge": challenge_of(started), "webauthn": json.dumps(answer)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/staff"
    assert "Privacy officer" in client.get("/staff").text


def test_the_customers_sign_in_sends_an_employee_to_the_staff_sign_in_only_after_the_password(
    client: TestClient, container: Container, home: CreatedHome, unique: str
) -> None:
    """The right password of an employee at `/login` names `/staff/login` and opens no
    session; a wrong one, or an unknown email, gets the usual answer (S4)."""
    email = f"eve.{unique}@operator.example"
    initial = employee(container, email, "support")

    right = customer_login(client, email, initial)
    assert right.status_code == 401
    assert "This is an employee account: sign in at /staff/login." in right.text
    assert 'href="/staff/login">Go to the staff sign-in' in right.text
    assert client.get("/staff", follow_redirects=False).headers["location"] == "/staff/login"

    for wrong in (
        customer_login(client, email, "not the password"),
        customer_login(client, f"nobody.{unique}@operator.example", initial),
    ):
        assert wrong.status_code == 401
        assert GENERIC in wrong.text
        assert "staff sign-in</a>" not in wrong.text.split("</form>")[0]

    api = sign_in(client, email, initial)
    assert api.status_code == 401
    assert api.json()["code"] == "staff_sign_in_required"
    assert api.json()["staff_sign_in"] == "/staff/login"
    assert "token" not in api.json()
    assert sign_in(client, email, "not the password").json()["code"] == "invalid_credentials"
    # A customer is not affected.
    customer = next(iter(home.accounts))
    assert customer_login(client, customer, "not the password").status_code == 401


def test_wrong_passwords_at_the_customers_door_count_on_the_employees_account(
    client: TestClient, container: Container, unique: str
) -> None:
    """S2: guesses through either door add up on the employee's account (after a few, a
    second factor or more is asked for); the customers' door gives no fresh budget."""
    email = f"guess.{unique}@operator.example"
    employee(container, email, "support")
    gate = container.gate
    attempt = Attempt(
        account=gate._account_key(email, staff=True, now=container.clock.now()),
        source="203.0.113.250",
        known_device=False,
    )
    assert not gate.throttle.check(attempt, container.clock.now().timestamp()).step_up
    for i in range(6):
        r = sign_in(from_source(client, f"198.51.100.{i + 10}"), email, f"guess {i}")
        assert r.json()["code"] == "invalid_credentials"
    assert gate.throttle.check(attempt, container.clock.now().timestamp()).step_up


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_staff_sign_out_refuses_a_cross_site_form(
    client: TestClient, container: Container, unique: str, site: str
) -> None:
    email = f"out.{unique}@operator.example"
    initial = employee(container, email, "support")
    staff_login(client, email, initial)
    refused = client.post("/staff/logout", headers={"sec-fetch-site": site}, follow_redirects=False)
    assert refused.status_code == 403
    assert refused.json()["code"] == "cross_site_request"
    assert client.get("/staff/security").status_code == 200  # still signed in


def test_a_customer_session_does_not_open_the_staff_console(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    r = sign_in(client, next(iter(home.accounts)))
    assert r.status_code == 201
    headers = {"authorization": f"Bearer {r.json()['token']}"}
    for path in ("/staff", "/staff/security"):
        answer = client.get(path, headers=headers, follow_redirects=False)
        assert answer.headers["location"] == "/staff/login"
    assert client.get(f"{API}/me", headers=headers).status_code == 200
