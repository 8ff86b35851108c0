"""Signing in through the API: answers, throttles, links, factors, sessions and step-up.

Obligations: R4-R7, S1-S5, C7. Sources are varied with Starlette's `client=` address (the
service sees it as the peer's address); time moves with the container's FakeClock.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.factories import PASSWORD, make_home
from tests.functional.conftest import owner_email
from tests.softauthn import SoftAuthenticator
from tutela.app import create_app
from tutela.audit.models import AuditEvent
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.identity.breached import import_lines, sha1_hex
from tutela.identity.models import PasswordCredential
from tutela.identity.passwords import PasswordHasher
from tutela.identity.signin import Client
from tutela.identity.models import SessionKind

API = "/api/v1"
DEVICE_HEADER = "x-tutela-device"
LINK = re.compile(r"/login/link#(tsl_[A-Za-z0-9_\-]+)")
NEW_PASSWORD = "walnut orbit candle meadow"

SUBJECT_NEW_DEVICE = "New sign-in to your Tutela account"
SUBJECT_FACTOR_FAILED = "Someone entered your Tutela password"
SUBJECT_LINK = "Your Tutela sign-in link"
SUBJECT_BREACHED = "Change your Tutela password"
SUBJECT_CHANGED = "Your Tutela password was changed"
SUBJECT_RECOVERY_USED = "A recovery code was used on your Tutela account"
SUBJECT_DEFENDED = "Tutela entered defended mode"

Variant = Callable[..., tuple[Container, TestClient]]


# --- helpers (also used by test_staff.py) ------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def from_source(client: TestClient, address: str) -> TestClient:
    """A client of the same app whose requests come from `address`."""
    return TestClient(client.app, client=(address, 50000))


def sign_in(
    client: TestClient,
    email: str,
    password: str = PASSWORD,
    *,
    device: str | None = None,
    user_agent: str | None = None,
    staff: bool = False,
) -> httpx.Response:
    headers = {}
    if device is not None:
        headers[DEVICE_HEADER] = device
    if user_agent is not None:
        headers["user-agent"] = user_agent
    path = f"{API}/staff/auth/token" if staff else f"{API}/auth/token"
    return client.post(path, json={"email": email, "password": password}, headers=headers)


def signed_in(response: httpx.Response, stage: str = "full") -> dict[str, str]:
    assert response.status_code == 201, response.text
    assert response.json()["stage"] == stage
    return bearer(response.json()["token"])


def step_up(client: TestClient, headers: dict[str, str], **proof: Any) -> None:
    r = client.post(f"{API}/auth/step-up", json=proof, headers=headers)
    assert r.status_code == 204, r.text


def add_totp(
    client: TestClient, container: Container, headers: dict[str, str]
) -> tuple[pyotp.TOTP, str]:
    """Enrol an authenticator app through the API; (its TOTP, the factor id)."""
    r = client.post(f"{API}/factors/totp", json={}, headers=headers)
    assert r.status_code == 201, r.text
    totp = pyotp.TOTP(r.json()["secret"])
    factor_id = r.json()["factor_id"]
    confirmed = client.post(
        f"{API}/factors/totp/{factor_id}/confirm",
        json={"code": totp.at(container.clock.now())},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    return totp, factor_id


def next_code(container: Container, totp: pyotp.TOTP) -> str:
    """A code of the next time step: the current one may be used already (RFC 6238 §5.2)."""
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(seconds=30))
    return totp.at(container.clock.now())


def wrong_code(container: Container, totp: pyotp.TOTP) -> str:
    now = container.clock.now()
    valid = {totp.at(now + timedelta(seconds=s)) for s in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def authenticator(container: Container) -> SoftAuthenticator:
    return SoftAuthenticator(container.settings.rp_id, container.settings.origin)


def add_security_key(
    client: TestClient, key: SoftAuthenticator, headers: dict[str, str]
) -> dict[str, Any]:
    """Register `key` through the API (navigator.credentials.create); the new factor."""
    r = client.post(f"{API}/factors/webauthn/options", headers=headers)
    assert r.status_code == 200, r.text
    credential = key.create(json.dumps(r.json()["options"]))
    added = client.post(
        f"{API}/factors/webauthn",
        json={"ceremony": r.json()["ceremony"], "credential": credential},
        headers=headers,
    )
    assert added.status_code == 201, added.text
    return dict(added.json())


def second_factor(
    client: TestClient, challenge: str, *, device: str | None = None, **proof: Any
) -> httpx.Response:
    headers = {DEVICE_HEADER: device} if device else {}
    return client.post(
        f"{API}/auth/token/factor", json={"challenge": challenge, **proof}, headers=headers
    )


def assertion(key: SoftAuthenticator, started: httpx.Response, **forged: Any) -> dict[str, Any]:
    assert started.status_code == 202, started.text
    return key.get(json.dumps(started.json()["webauthn"]), **forged)


def mails(
    container: Container, *, to: str | None = None, subject: str | None = None
) -> list[EmailMessage]:
    """Every message written so far, oldest first, filtered by recipient and subject."""
    directory = container.settings.mail_path
    if not directory.is_dir():
        return []
    parser = BytesParser(policy=policy.default)
    found = []
    for path in sorted(directory.glob("*.eml")):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        recipients = {a.lower() for _, a in getaddresses(message.get_all("To", []))}
        if to is not None and to.lower() not in recipients:
            continue
        if subject is not None and message["Subject"] != subject:
            continue
        found.append(message)
    return found


def body(message: EmailMessage) -> str:
    return str(message.get_content())


def link_token(container: Container, email: str) -> str:
    links = mails(container, to=email, subject=SUBJECT_LINK)
    assert links, "no sign-in link was mailed"
    found = LINK.search(body(links[-1]))
    assert found is not None
    return found.group(1)


def follow_link(client: TestClient, token: str) -> httpx.Response:
    return client.post(f"{API}/auth/token/link", json={"token": token})


def fail_from_many_sources(
    container: Container, email: str, times: int, *, first: int = 0, spacing: float = 0
) -> None:
    """`times` wrong passwords for `email`, each from a different /24, through the gate."""
    assert isinstance(container.clock, FakeClock)
    for n in range(first, first + times):
        address = f"10.{n // 250}.{n % 250}.7"
        with container.stores.session() as session:
            with pytest.raises(Exception) as refused:
                container.gate.sign_in(
                    session,
                    email=email,
                    password=f"guess {n}",
                    kind=SessionKind.API,
                    client=Client(address=address),
                    now=container.clock.now(),
                )
            assert getattr(refused.value, "code", "") == "invalid_credentials"
        container.clock.advance(timedelta(seconds=spacing))


class VerifyCounter:
    """Counts the password hashes the gate computes (argon2id verifications)."""

    def __init__(self, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = container.hasher.verify

        def counted(stored: str | None, password: str) -> bool:
            self.calls += 1
            return real(stored, password)

        monkeypatch.setattr(container.hasher, "verify", counted)


def set_password_hash(container: Container, home: CreatedHome, new_hash: str) -> None:
    account_id = home.accounts[owner_email(home)]
    with container.stores.session() as s:
        s.execute(
            update(PasswordCredential)
            .where(
                PasswordCredential.household_id == home.household_id,
                PasswordCredential.account_id == account_id,
            )
            .values(hash=new_hash)
        )
        s.commit()


def stored_password_hash(container: Container, home: CreatedHome) -> str:
    account_id = home.accounts[owner_email(home)]
    with container.stores.session() as s:
        row = s.get(PasswordCredential, (home.household_id, account_id))
        assert row is not None
        return row.hash


@dataclass
class Holder:
    """An account holder with an authenticator app, signed in once on their own device."""

    email: str
    totp: pyotp.TOTP
    factor_id: str
    device: str
    headers: dict[str, str]


def totp_holder(client: TestClient, container: Container, email: str) -> Holder:
    """Give `email` (no factor yet) an authenticator app through the API."""
    first = sign_in(client, email)
    headers = signed_in(first)
    step_up(client, headers, password=PASSWORD)
    totp, factor_id = add_totp(client, container, headers)
    return Holder(email, totp, factor_id, first.json()["device_token"], headers)


def sign_in_with_code(
    client: TestClient, container: Container, holder: Holder, *, device: str | None = None
) -> httpx.Response:
    started = sign_in(client, holder.email, device=device)
    assert started.status_code == 202, started.text
    code = next_code(container, holder.totp)
    return second_factor(client, started.json()["challenge"], code=code, device=device)


@pytest.fixture
def variant(container: Container, clock: FakeClock) -> Iterator[Variant]:
    """Another app over the same stores with some settings changed (and its own throttle)."""
    made: list[tuple[Container, TestClient]] = []

    def make(**changes: Any) -> tuple[Container, TestClient]:
        built = build(container.settings.model_copy(update=changes), clock=clock)
        made.append((built, TestClient(create_app(container=built))))
        return made[-1]

    yield make
    for built, test_client in made:
        test_client.close()
        built.close()


# --- 1. answers to a sign-in -------------------------------------------------------------


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    client: TestClient, home: CreatedHome
) -> None:
    """S4: whether an account exists does not show in the answer."""
    wrong = sign_in(client, owner_email(home), "not the password at all")
    unknown = sign_in(client, f"nobody.{uuid.uuid4().hex[:6]}@example.com", "whatever it is")

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


def test_the_right_password_signs_in_an_account_without_factors(
    client: TestClient, home: CreatedHome
) -> None:
    """R5 off (the fixture's settings): a password alone gives a full session and a device."""
    r = sign_in(client, owner_email(home))

    headers = signed_in(r, "full")
    assert r.json()["device_token"].startswith("tsd_")
    assert r.headers["cache-control"] == "no-store"
    me = client.get(f"{API}/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] == owner_email(home)


def test_an_authenticator_code_completes_the_sign_in_and_cannot_be_replayed(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R5, S4: the second step asks for the enrolled factor; a TOTP code works once (RFC 6238)."""
    email = owner_email(home)
    totp, _, _ = totp_holder(client, container, email)

    started = sign_in(client, email)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "second_factor_required"
    assert started.json()["factors"] == ["totp"]
    assert "token" not in started.json()
    code = next_code(container, totp)
    signed_in(second_factor(client, started.json()["challenge"], code=code))

    replay = sign_in(client, email)
    refused = second_factor(client, replay.json()["challenge"], code=code)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_second_factor"
    # The challenge survives one wrong answer: the next step's code still gets in.
    signed_in(second_factor(client, replay.json()["challenge"], code=next_code(container, totp)))


