"""Usernameless passkey sign-in through the API, with a software authenticator (R4, R5, S2, S4).

A passkey is a discoverable credential that verifies its user: its assertion alone opens a
full session. The relying party is `localhost`, as in the demo (WebAuthn refuses an IP
address as RP ID).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email
from tests.functional.test_sign_in_api import (
    API,
    DEVICE_HEADER,
    add_security_key,
    assertion,
    from_source,
    second_factor,
    sign_in,
    signed_in,
    step_up,
)
from tests.functional.test_staff import (  # noqa: F401 (the runner fixture)
    change_password,
    runner,
    staff_add,
)
from tests.softauthn import SoftAuthenticator
from tutela.app import create_app
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.identity.models import Factor, PasskeyCeremony
from tutela.settings import Settings

ORIGIN = "http://localhost:8000"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The demo's address: `localhost` is the RP ID, set here rather than by default."""
    return settings.model_copy(update={"public_url": ORIGIN, "webauthn_rp_id": "localhost"})


def passkey_authenticator(**options: Any) -> SoftAuthenticator:
    return SoftAuthenticator("localhost", ORIGIN, **options)


def add_passkey(
    client: TestClient,
    key: SoftAuthenticator,
    headers: dict[str, str],
    *,
    label: str | None = "Phone",
) -> httpx.Response:
    """Register `key` as a passkey (navigator.credentials.create with residentKey)."""
    r = client.post(f"{API}/factors/webauthn/options", json={"kind": "passkey"}, headers=headers)
    assert r.status_code == 200, r.text
    credential = key.create(json.dumps(r.json()["options"]))
    body: dict[str, Any] = {"ceremony": r.json()["ceremony"], "credential": credential}
    if label is not None:
        body["label"] = label
    return client.post(f"{API}/factors/webauthn", json=body, headers=headers)


def customer_with_passkey(client: TestClient, home: CreatedHome) -> tuple[str, SoftAuthenticator]:
    email = owner_email(home)
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)
    key = passkey_authenticator()
    added = add_passkey(client, key, headers)
    assert added.status_code == 201, added.text
    return email, key


def passkey_options(client: TestClient, *, staff: bool = False) -> str:
    path = f"{API}/staff/auth/passkey/options" if staff else f"{API}/auth/passkey/options"
    r = client.post(path)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return json.dumps(r.json()["options"])


def passkey_sign_in(
    client: TestClient, credential: dict[str, Any], *, staff: bool = False
) -> httpx.Response:
    path = f"{API}/staff/auth/passkey" if staff else f"{API}/auth/passkey"
    return client.post(path, json={"credential": credential})


def refused(response: httpx.Response, code: str = "passkey_invalid") -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["code"] == code
    return body


def test_a_passkey_alone_signs_a_customer_in_with_a_full_session(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R5: no email, no password, no second step; the session can do everything."""
    email, key = customer_with_passkey(client, home)

    options = json.loads(passkey_options(client))
    assert options["rpId"] == "localhost"
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    r = passkey_sign_in(client, key.get(json.dumps(options)))
    headers = signed_in(r, "full")
    assert r.json()["device_token"]
    security = client.get(f"{API}/account/security", headers=headers)
    assert security.status_code == 200
    assert [f["label"] for f in security.json()["factors"]] == ["Phone"]
    # The handle the authenticator keeps is random: it does not reveal the account id.
    with container.stores.session() as session:
        factor = session.scalars(select(Factor)).one()
        assert factor.user_handle is not None and len(factor.user_handle) == 32
        assert factor.user_handle != factor.account_id.bytes  # type: ignore[union-attr]
    assert sign_in(client, email).status_code == 202  # the password still asks for a factor


def test_registering_a_passkey_asks_for_a_resident_key_and_user_verification(
    client: TestClient, home: CreatedHome
) -> None:
    """A passkey must verify its user (it stands for both factors); the security-key
    option still asks for neither."""
    headers = signed_in(sign_in(client, owner_email(home)))
    step_up(client, headers, password=PASSWORD)
    made = client.post(f"{API}/factors/webauthn/options", json={"kind": "passkey"}, headers=headers)
    selection = made.json()["options"]["authenticatorSelection"]
    assert selection["residentKey"] == "required"
    assert selection["requireResidentKey"] is True
    assert selection["userVerification"] == "required"
    plain = client.post(f"{API}/factors/webauthn/options", headers=headers)
    assert plain.json()["options"]["authenticatorSelection"]["residentKey"] == "discouraged"

    no_pin = passkey_authenticator(user_verification=False)
    added = add_passkey(client, no_pin, headers)
    assert added.status_code == 422
    assert added.json()["code"] == "webauthn_failed"
    unnamed = add_passkey(client, passkey_authenticator(), headers, label=None)
    assert unnamed.status_code == 201, unnamed.text
    assert unnamed.json()["label"] == "Passkey"


def test_a_replayed_challenge_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """A challenge serves one answer: passkeys keep a counter of 0, so the server must."""
    _, key = customer_with_passkey(client, home)
    options = passkey_options(client)
    signed_in(passkey_sign_in(client, key.get(options)))

    refused(passkey_sign_in(client, key.replay()), "passkey_challenge_expired")
    # A fresh signature over the same challenge is no better.
    refused(passkey_sign_in(client, key.get(options)), "passkey_challenge_expired")
    with container.stores.session() as session:
        used = session.scalars(select(PasskeyCeremony)).one()
        assert used.used_at is not None


def test_a_challenge_is_single_use_across_processes(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """Another API process over the same database refuses an answer this one accepted:
    the claim is in the database, not in a process's memory."""
    _, key = customer_with_passkey(client, home)
    signed_in(passkey_sign_in(client, key.get(passkey_options(client))))
    assert isinstance(container.clock, FakeClock)
    other = build(container.settings, clock=container.clock)
    try:
        with TestClient(create_app(container=other)) as elsewhere:
            refused(passkey_sign_in(elsewhere, key.replay()), "passkey_challenge_expired")
            signed_in(passkey_sign_in(elsewhere, key.get(passkey_options(client))))
    finally:
        other.close()


def test_an_expired_challenge_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    _, key = customer_with_passkey(client, home)
    options = passkey_options(client)
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(minutes=container.settings.challenge_ttl_minutes + 1))
    refused(passkey_sign_in(client, key.get(options)), "passkey_challenge_expired")


def test_an_unknown_passkey_and_a_forged_signature_get_the_same_answer(
    client: TestClient, home: CreatedHome
) -> None:
    """No oracle: whether a credential id is registered here does not show."""
    _, key = customer_with_passkey(client, home)
    stranger = passkey_authenticator()
    stranger.create(
        json.dumps(
            {
                "rp": {"id": "localhost"},
                "user": {"id": "c3RyYW5nZXI"},
                "challenge": "AAAAAAAAAAAAAAAAAAAAAA",
                "pubKeyCredParams": [{"alg": -7, "type": "public-key"}],
            }
        )
    )
    unknown = refused(passkey_sign_in(client, stranger.get(passkey_options(client))))

    impostor = key.clone()  # the same credential id and handle, signed by another key
    for credential in impostor.credentials.values():
        credential.key = ec.generate_private_key(ec.SECP256R1())
    bad = refused(passkey_sign_in(client, impostor.get(passkey_options(client))))
    assert {k: v for k, v in unknown.items() if k != "instance"} == {
        k: v for k, v in bad.items() if k != "instance"
    }

    wrong_handle = key.get(passkey_options(client))
    wrong_handle["response"]["userHandle"] = "c29tZW9uZS1lbHNl"
    refused(passkey_sign_in(client, wrong_handle))
    # The real passkey still works afterwards.
    signed_in(passkey_sign_in(client, key.get(passkey_options(client))))


def test_an_assertion_for_another_origin_or_rp_id_is_refused(
    client: TestClient, home: CreatedHome
) -> None:
    """R4: a look-alike site relaying the ceremony gets nothing."""
    _, key = customer_with_passkey(client, home)
    phished = key.get(passkey_options(client), origin="https://localhost.sign-in-tutela.example")
    refused(passkey_sign_in(client, phished))
    other_rp = key.get(passkey_options(client), rp_id="sign-in-tutela.example")
    refused(passkey_sign_in(client, other_rp))
    signed_in(passkey_sign_in(client, key.get(passkey_options(client))))


def test_an_assertion_without_user_verification_is_refused(
    client: TestClient, home: CreatedHome
) -> None:
    """Possession alone is one factor: without user verification no session opens."""
    _, key = customer_with_passkey(client, home)
    key.user_verification = False
    refused(passkey_sign_in(client, key.get(passkey_options(client))))


def test_failed_passkeys_count_against_the_source(client: TestClient, home: CreatedHome) -> None:
    """S2, S4: guessing with passkeys is slowed like guessing passwords."""
    _, key = customer_with_passkey(client, home)
    attacker = from_source(client, "198.51.100.23")
    for _ in range(5):
        bad = key.get(passkey_options(attacker), origin="https://evil.example")
        refused(passkey_sign_in(attacker, bad))
    # Even a right answer from that source is refused, and so is asking for options.
    slowed = passkey_sign_in(attacker, key.get(passkey_options(client)))
    assert slowed.status_code == 429
    assert slowed.json()["code"] == "too_many_attempts"
    assert float(slowed.headers["retry-after"]) > 0
    assert attacker.post(f"{API}/auth/passkey/options").status_code == 429
    # The holder, elsewhere, is not slowed.
    signed_in(passkey_sign_in(client, key.get(passkey_options(client))))


def test_the_holders_own_device_is_not_slowed_by_failures_from_its_network(
    client: TestClient, home: CreatedHome
) -> None:
    """S4, R6: an attacker sharing the holder's network cannot lock them out."""
    _, key = customer_with_passkey(client, home)
    shared = from_source(client, "203.0.113.7")
    first = passkey_sign_in(shared, key.get(passkey_options(shared)))
    device = first.json()["device_token"]
    for _ in range(5):
        bad = key.get(passkey_options(client), origin="https://evil.example")
        refused(passkey_sign_in(shared, bad))
    assert passkey_sign_in(shared, key.get(passkey_options(client))).status_code == 429
    again = shared.post(
        f"{API}/auth/passkey",
        json={"credential": key.get(passkey_options(client))},
        headers={DEVICE_HEADER: device},
    )
    signed_in(again)


def test_a_passkey_also_serves_as_the_second_factor_after_a_password(
    client: TestClient, home: CreatedHome
) -> None:
    """The random user handle is accepted in the two-step sign-in too."""
    email, key = customer_with_passkey(client, home)
    started = sign_in(client, email)
    assert started.json()["factors"] == ["webauthn"]
    signed_in(second_factor(client, started.json()["challenge"], webauthn=assertion(key, started)))


def test_an_employee_signs_in_with_a_passkey_and_the_audiences_stay_apart(
    runner: CliRunner,  # noqa: F811
    client: TestClient,
    home: CreatedHome,
    unique: str,
) -> None:
    """R4: a reviewer's passkey is phishing-resistant MFA; a customer's passkey does not
    answer an employee's ceremony, nor the other way round."""
    email = f"pia.{unique}@operator.example"
    initial = staff_add(runner, email, "reviewer")
    headers = signed_in(sign_in(client, email, initial, staff=True), "enrol")
    staff_key = passkey_authenticator()
    assert add_passkey(client, staff_key, headers).status_code == 201
    change_password(client, headers, initial)

    signed_in(
        passkey_sign_in(client, staff_key.get(passkey_options(client, staff=True)), staff=True)
    )
    refused(passkey_sign_in(client, staff_key.get(passkey_options(client))))
    _, customer_key = customer_with_passkey(client, home)
    refused(
        passkey_sign_in(client, customer_key.get(passkey_options(client, staff=True)), staff=True)
    )
    # A customer ceremony's challenge cannot be answered at the employees' door.
    refused(
        passkey_sign_in(client, staff_key.get(passkey_options(client)), staff=True),
        "passkey_challenge_expired",
    )


def test_a_security_key_registered_before_user_handles_still_signs_in(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """Credentials made with the account id as user handle (before random handles) keep
    working as a second factor."""
    email = owner_email(home)
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)
    key = passkey_authenticator()
    add_security_key(client, key, headers)
    with container.stores.session() as session:
        factor = session.scalars(select(Factor)).one()
        account_id = factor.account_id
        assert account_id is not None
        factor.user_handle = None
        session.commit()
    for credential in key.credentials.values():
        credential.user_handle = account_id.bytes
    started = sign_in(client, email)
    signed_in(second_factor(client, started.json()["challenge"], webauthn=assertion(key, started)))


def test_the_console_signs_in_with_a_passkey_same_origin_only(
    client: TestClient, home: CreatedHome
) -> None:
    """The login page's passkey button posts here; a cross-site form is refused (login
    CSRF), a refused passkey shows the sign-in page again with the reason."""
    _, key = customer_with_passkey(client, home)
    cross = client.post(
        "/login/passkey",
        data={"credential": json.dumps(key.get(passkey_options(client)))},
        headers={"sec-fetch-site": "cross-site"},
        follow_redirects=False,
    )
    assert cross.status_code == 403

    bad = key.get(passkey_options(client), origin="https://evil.example")
    page = client.post(
        "/login/passkey", data={"credential": json.dumps(bad)}, follow_redirects=False
    )
    assert page.status_code == 401
    assert "This passkey was not accepted." in page.text

    done = client.post(
        "/login/passkey",
        data={"credential": json.dumps(key.get(passkey_options(client)))},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/"
    assert "tutela_session" in done.cookies


def test_an_employee_signs_in_on_the_staff_console_with_a_passkey(
    runner: CliRunner,  # noqa: F811
    client: TestClient,
    home: CreatedHome,
    unique: str,
) -> None:
    """R4: the staff sign-in page's passkey button; a customer's passkey is refused there."""
    email = f"oli.{unique}@operator.example"
    initial = staff_add(runner, email, "privacy_officer")
    headers = signed_in(sign_in(client, email, initial, staff=True), "enrol")
    staff_key = passkey_authenticator()
    assert add_passkey(client, staff_key, headers).status_code == 201
    change_password(client, headers, initial)

    done = client.post(
        "/staff/login/passkey",
        data={"credential": json.dumps(staff_key.get(passkey_options(client, staff=True)))},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/staff"
    _, customer_key = customer_with_passkey(client, home)
    page = client.post(
        "/staff/login/passkey",
        data={"credential": json.dumps(customer_key.get(passkey_options(client, staff=True)))},
        follow_redirects=False,
    )
    assert page.status_code == 401
    assert "This passkey was not accepted." in page.text
