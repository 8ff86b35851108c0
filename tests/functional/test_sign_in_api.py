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
from tutela.core.errors import InvalidCredentials
from tutela.households.service import CreatedHome
from tutela.identity.breached import import_lines, sha1_hex
from tutela.identity.models import PasswordCredential, SessionKind
from tutela.identity.passwords import PasswordHasher
from tutela.identity.signin import Client

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
    confirm: bool = True,
) -> httpx.Response:
    """The password step. An account without a factor signing in from a device Tutela
    has not seen (no `device`) is answered with an emailed link (R6); with `confirm` the
    link is followed from the same device, as its holder would, and that answer is
    returned. From a known device a link is a risk signal, left for the test to see."""
    headers = {}
    if device is not None:
        headers[DEVICE_HEADER] = device
    if user_agent is not None:
        headers["user-agent"] = user_agent
    path = f"{API}/staff/auth/token" if staff else f"{API}/auth/token"
    r = client.post(path, json={"email": email, "password": password}, headers=headers)
    if confirm and device is None and r.status_code == 202 and r.json() == {"status": "link_sent"}:
        container: Container = client.app.state.container  # type: ignore[attr-defined]
        token = link_token(container, email)
        r = client.post(f"{API}/auth/token/link", json={"token": token}, headers=headers)
    return r


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
    container: Container,
    email: str,
    times: int,
    *,
    first: int = 0,
    spacing: float = 0,
    staff: bool = False,
) -> None:
    """`times` wrong passwords for `email`, each from a different /24, through the gate."""
    assert isinstance(container.clock, FakeClock)
    for n in range(first, first + times):
        address = f"10.{n // 250}.{n % 250}.7"
        with container.stores.session() as session, pytest.raises(InvalidCredentials):
            container.gate.sign_in(
                session,
                email=email,
                password=f"guess {n}",
                kind=SessionKind.API,
                client=Client(address=address),
                now=container.clock.now(),
                staff=staff,
            )
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


def signed_in_device(client: TestClient, email: str) -> str:
    r = sign_in(client, email)
    signed_in(r)
    return str(r.json()["device_token"])


def enrolment_session(r5: Container, r5_client: TestClient, email: str) -> dict[str, str]:
    """R5's first sign-in of a camera owner: the password, then the emailed link."""
    first = sign_in(r5_client, email, confirm=False)
    assert first.status_code == 202, first.text
    assert first.json() == {"status": "link_sent"}
    return signed_in(follow_link(r5_client, link_token(r5, email)), "enrol")


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
    totp = totp_holder(client, container, email).totp

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


def test_a_recovery_code_signs_in_once(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R5: recovery codes are offered as a factor, each works once, and its use is mailed."""
    holder = totp_holder(client, container, owner_email(home))
    issued = client.post(f"{API}/factors/recovery-codes", headers=holder.headers)
    assert issued.status_code == 201, issued.text
    code = issued.json()["codes"][0]

    started = sign_in(client, holder.email)
    assert started.json()["factors"] == ["totp", "recovery_code"]
    signed_in(second_factor(client, started.json()["challenge"], recovery_code=code))
    used = mails(container, to=holder.email, subject=SUBJECT_RECOVERY_USED)
    assert len(used) == 1
    assert "9 recovery codes left" in body(used[0])

    again = sign_in(client, holder.email)
    refused = second_factor(client, again.json()["challenge"], recovery_code=code)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_second_factor"


def test_a_security_key_registers_and_signs_in_through_the_api(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R5, S4: WebAuthn registration and assertion, as a browser would send them."""
    email = owner_email(home)
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)
    key = authenticator(container)
    factor = add_security_key(client, key, headers)
    assert factor["kind"] == "webauthn"

    started = sign_in(client, email)
    assert started.status_code == 202, started.text
    assert started.json()["factors"] == ["webauthn"]
    assert started.json()["webauthn"]["rpId"] == container.settings.rp_id
    r = second_factor(client, started.json()["challenge"], webauthn=assertion(key, started))
    signed_in(r)


def test_an_assertion_made_for_another_origin_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R4 direction: a look-alike site relaying the ceremony gets an assertion that fails."""
    email = owner_email(home)
    headers = signed_in(sign_in(client, email))
    step_up(client, headers, password=PASSWORD)
    key = authenticator(container)
    add_security_key(client, key, headers)

    started = sign_in(client, email)
    phished = assertion(key, started, origin="https://127.0.0.1.sign-in-tutela.example")
    refused = second_factor(client, started.json()["challenge"], webauthn=phished)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_second_factor"
    signed_in(second_factor(client, started.json()["challenge"], webauthn=assertion(key, started)))


# --- 2. throttles (S2, S4, R6) -------------------------------------------------------------


def test_a_source_is_slowed_after_five_failures_before_any_hash_is_computed(
    client: TestClient,
    container: Container,
    clock: FakeClock,
    home: CreatedHome,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S4, R6: failures count per source; a slowed source is refused before the password
    is hashed, while another source signs in to the same account at once."""
    attacker = from_source(client, "203.0.113.5")
    for n in range(5):
        r = sign_in(attacker, f"victim{n}.{unique}@example.com", f"guess number {n}")
        assert r.status_code == 401, r.text
    hashes = VerifyCounter(container, monkeypatch)

    slowed = sign_in(attacker, owner_email(home))
    assert slowed.status_code == 429
    assert slowed.json()["code"] == "too_many_attempts"
    assert int(slowed.headers["retry-after"]) >= 1
    assert hashes.calls == 0

    signed_in(sign_in(from_source(client, "192.0.2.44"), owner_email(home)))
    assert hashes.calls == 1
    clock.advance(timedelta(seconds=int(slowed.headers["retry-after"])))
    signed_in(sign_in(attacker, owner_email(home)))


def test_after_five_failures_on_an_account_the_right_password_sends_a_link(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S2, R6: failures on an account, from any source, raise the bar to an emailed link
    (never a lock-out); the link signs in once."""
    email = owner_email(home)
    device = signed_in_device(client, email)
    for n in range(5):
        r = sign_in(from_source(client, f"198.51.100.{n + 1}"), email, f"guess {n}")
        assert r.status_code == 401

    # Even from a known device, the right password now only sends a link.
    r = sign_in(client, email, device=device, confirm=False)
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "link_sent"}
    token = link_token(container, email)
    signed_in(follow_link(client, token), "full")
    again = follow_link(client, token)
    assert again.status_code == 401
    assert again.json()["code"] == "challenge_expired"
    # The complete sign-in cleared the account's failures: from the known device the
    # password alone works again.
    signed_in(sign_in(client, email, device=device, confirm=False))


def test_the_holder_on_a_known_device_is_not_slowed_by_an_attack_from_their_network(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R6 (a victim who can still sign in during an attack on their account), S4: a device
    that signed in before is not slowed by failures from its address."""
    shared = from_source(client, "198.51.100.77")  # one NAT: the holder and the attacker
    holder = totp_holder(shared, container, owner_email(home))
    for n in range(6):
        sign_in(shared, holder.email, f"guess {n}")

    assert sign_in(shared, holder.email).status_code == 429
    r = sign_in_with_code(shared, container, holder, device=holder.device)
    signed_in(r)
    assert r.json()["device_token"] is None  # the same device, not a new one


def test_after_100_failures_the_password_is_not_checked_from_any_device(
    backend: str,
    client: TestClient,
    container: Container,
    home: CreatedHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S2: at most 100 consecutive failed attempts per account (NIST SP 800-63B §5.2.2);
    after that the password is not even hashed, from the holder's own device either: the
    holder goes on through the emailed link. (A known device used to be exempt, which let
    guessing from it go on for ever.)"""
    if backend != "sqlite":
        pytest.skip("the throttle is the same in memory whatever the store; 100 hashes once")
    holder = totp_holder(client, container, owner_email(home))
    # Spaced out so the stuffing detector (20 failures a minute) stays out of it.
    fail_from_many_sources(container, holder.email, 99, spacing=4)
    hashes = VerifyCounter(container, monkeypatch)
    still_checked = sign_in(from_source(client, "192.0.2.10"), holder.email, confirm=False)
    assert still_checked.status_code == 202, still_checked.text
    assert still_checked.json()["status"] == "link_sent"  # long past account_link_after
    assert hashes.calls == 1
    fail_from_many_sources(container, holder.email, 1, first=99)
    hashes.calls = 0

    right = sign_in(from_source(client, "192.0.2.11"), holder.email)
    wrong = sign_in(from_source(client, "192.0.2.12"), holder.email, "one more guess")
    on_own_device = sign_in(client, holder.email, device=holder.device)
    assert right.status_code == wrong.status_code == on_own_device.status_code == 401
    assert right.json() == wrong.json()
    assert right.json()["code"] == on_own_device.json()["code"] == "sign_in_link_required"
    assert hashes.calls == 0


def test_at_the_limit_the_holder_signs_in_through_the_emailed_link_and_their_factor(
    client: TestClient, container: Container, home: CreatedHome, variant: Variant
) -> None:
    """S2, R6: the limit stops guessing, never the holder (a victim who can still sign in
    during an attack on their account). Their own device no longer skips the limit, which
    let codes be guessed from it for ever: the mailbox, then the factor, let them in."""
    holder = totp_holder(client, container, owner_email(home))
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    fail_from_many_sources(strict, holder.email, 5)

    refused = sign_in(strict_client, holder.email, device=holder.device)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "sign_in_link_required"
    started = follow_link(strict_client, link_token(strict, holder.email))
    assert started.status_code == 202, started.text
    code = next_code(strict, holder.totp)
    signed_in(
        second_factor(strict_client, started.json()["challenge"], code=code, device=holder.device)
    )


def test_a_locked_unknown_email_gets_the_same_answer_as_a_locked_account(
    client: TestClient, container: Container, home: CreatedHome, variant: Variant, unique: str
) -> None:
    """S2, S4: the answer at the limit does not tell whether the account exists."""
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    unknown = f"nobody.{unique}@example.com"
    fail_from_many_sources(strict, owner_email(home), 5)
    fail_from_many_sources(strict, unknown, 5, first=5)

    known_answer = sign_in(strict_client, owner_email(home))
    unknown_answer = sign_in(strict_client, unknown, "any password at all")
    assert known_answer.status_code == unknown_answer.status_code == 401
    assert known_answer.json() == unknown_answer.json()
    assert known_answer.json()["code"] == "sign_in_link_required"


def test_the_link_sent_at_the_limit_does_not_skip_the_second_factor(
    client: TestClient, container: Container, home: CreatedHome, variant: Variant
) -> None:
    """R5, S2: the link stands in for the password only; whoever reads the mailbox after
    failing the password on purpose still meets the authenticator app."""
    holder = totp_holder(client, container, owner_email(home))
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    fail_from_many_sources(strict, holder.email, 5)
    # No password needed: anyone can type the email, and the link goes to the mailbox.
    locked = sign_in(strict_client, holder.email, "anything")
    assert locked.json()["code"] == "sign_in_link_required"
    strict.deliver_notices()

    opened = follow_link(strict_client, link_token(strict, holder.email))
    assert opened.status_code == 202, opened.text
    assert opened.json()["status"] == "second_factor_required"
    assert "token" not in opened.json()


def test_the_link_promised_at_the_limit_is_mailed_with_the_answer(
    client: TestClient, home: CreatedHome, variant: Variant
) -> None:
    """S2: "use the sign-in link we emailed" must be true when the answer arrives."""
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    fail_from_many_sources(strict, owner_email(home), 5)
    locked = sign_in(strict_client, owner_email(home))
    assert locked.json()["code"] == "sign_in_link_required"

    assert mails(strict, to=owner_email(home), subject=SUBJECT_LINK)


# --- 3. the stuffing detector (R6) ---------------------------------------------------------


def test_stuffing_enters_defended_mode_once_and_raises_the_bar_for_unknown_devices(
    client: TestClient, container: Container, home: CreatedHome, unique: str
) -> None:
    """R6: failures over many accounts from several sources switch defended mode on, with
    one audit event and one alert to the security team; then a right password from an
    unknown device needs the emailed link, while a known device signs in directly."""
    email = owner_email(home)
    device = signed_in_device(client, email)
    answers = []
    for source in range(3):
        stuffer = from_source(client, f"203.0.{113 + source}.9")
        for n in range(4):
            r = sign_in(stuffer, f"leaked{source}-{n}.{unique}@example.com", "hunter2 leaked")
            answers.append(r.status_code)
    # The tenth address with no account switches defended mode on; from then on each of
    # these sources is slowed after its first failure.
    assert answers[:10] == [401] * 10
    assert set(answers[10:]) <= {401, 429}
    # The attack goes on from new sources: still one alert.
    for source in range(3):
        r = sign_in(from_source(client, f"198.18.{source}.9"), f"more{source}.{unique}@example.com")
        assert r.status_code == 401, r.text
    container.deliver_notices()

    with container.stores.session() as s:
        entered = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.tag == "identity:defence:enter")
        )
    assert entered == 1
    alerts = mails(container, to=container.settings.security_alert_email, subject=SUBJECT_DEFENDED)
    assert len(alerts) == 1
    assert email not in body(alerts[0])

    assert sign_in(from_source(client, "203.0.113.9"), email).status_code == 429
    unknown_device = sign_in(from_source(client, "192.0.2.200"), email, confirm=False)
    assert unknown_device.status_code == 202, unknown_device.text
    assert unknown_device.json() == {"status": "link_sent"}
    signed_in(sign_in(client, email, device=device))


# --- 4. a breached password at sign-in (R7, S5) --------------------------------------------


def test_a_breached_password_at_sign_in_leads_to_a_forced_change(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R7: a password found in the breach corpus admits its holder (after the emailed link)
    only to changing it; the holder is told why by mail."""
    email = owner_email(home)
    leaked = f"lantern {uuid.uuid4().hex} harbour"
    import_lines(container.stores.main_sessions, [sha1_hex(leaked)], prefix=None)
    set_password_hash(container, home, container.hasher.hash(leaked))

    r = sign_in(client, email, leaked, confirm=False)
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "link_sent"}
    assert len(mails(container, to=email, subject=SUBJECT_BREACHED)) == 1
    headers = signed_in(follow_link(client, link_token(container, email)), "change_password")

    blocked = client.get(f"{API}/profiles", headers=headers)
    assert blocked.status_code == 403
    assert blocked.json()["code"] == "password_change_required"
    changed = client.post(
        f"{API}/account/password",
        json={"current_password": leaked, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    new_headers = signed_in(changed, "full")
    assert client.get(f"{API}/profiles", headers=new_headers).status_code == 200
    signed_in(sign_in(client, email, NEW_PASSWORD), "full")


# --- 5. changing the password (S1, C7) and rehashing (S3) ---------------------------------


def test_changing_the_password_needs_step_up_refuses_weak_ones_and_ends_every_session(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S1 (NIST SP 800-63B §5.1.1.2), C7: a fresh confirmation first; weak passwords are
    refused with the reason; then every earlier session ends and the holder is told."""
    email = owner_email(home)
    headers = signed_in(sign_in(client, email))
    elsewhere = signed_in(sign_in(from_source(client, "192.0.2.60"), email))

    def change(new: str) -> httpx.Response:
        return client.post(
            f"{API}/account/password",
            json={"current_password": PASSWORD, "new_password": new},
            headers=headers,
        )

    assert change(NEW_PASSWORD).json()["code"] == "step_up_required"
    assert change(NEW_PASSWORD).status_code == 403
    bad = client.post(f"{API}/auth/step-up", json={"password": "not it"}, headers=headers)
    assert bad.status_code == 401
    assert bad.json()["code"] == "step_up_failed"
    step_up(client, headers, password=PASSWORD)

    for weak, code in [
        ("short1", "password_too_short"),
        ("password123", "password_breached"),
        ("my tutela garden gate", "password_context"),
    ]:
        r = change(weak)
        assert (r.status_code, r.json()["code"]) == (422, code), weak
    changed = change(NEW_PASSWORD)
    new_headers = signed_in(changed, "full")

    for old in (headers, elsewhere):
        ended = client.get(f"{API}/me", headers=old)
        assert ended.status_code == 401
    assert client.get(f"{API}/me", headers=new_headers).status_code == 200
    assert len(mails(container, to=email, subject=SUBJECT_CHANGED)) == 1
    assert sign_in(client, email, PASSWORD).json()["code"] == "invalid_credentials"
    signed_in(sign_in(client, email, NEW_PASSWORD))


def test_a_step_up_lasts_ten_minutes(
    client: TestClient, clock: FakeClock, home: CreatedHome
) -> None:
    """C7: a confirmation is good for a few minutes only."""
    headers = signed_in(sign_in(client, owner_email(home)))
    step_up(client, headers, password=PASSWORD)
    assert client.post(f"{API}/factors/totp", json={}, headers=headers).status_code == 201

    clock.advance(timedelta(minutes=11))
    late = client.post(f"{API}/factors/totp", json={}, headers=headers)
    assert late.status_code == 403
    assert late.json()["code"] == "step_up_required"


def test_sign_in_rehashes_a_password_hashed_with_other_parameters(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S3: argon2id at the configured cost; an older hash is replaced at the next sign-in."""
    older = PasswordHasher(time_cost=3).hash(PASSWORD)
    set_password_hash(container, home, older)

    signed_in(sign_in(client, owner_email(home)))
    rehashed = stored_password_hash(container, home)
    assert rehashed != older
    assert rehashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    signed_in(sign_in(client, owner_email(home)))


# --- 6. sessions (R6, S4) ------------------------------------------------------------------


def test_the_sessions_list_shows_where_each_signed_in_and_one_can_be_ended(
    client: TestClient, home: CreatedHome
) -> None:
    """R6, S4: the holder sees each session's address and device, and ends one."""
    email = owner_email(home)
    laptop = signed_in(sign_in(client, email, user_agent="Firefox/128 on the laptop"))
    phone_client = from_source(client, "203.0.113.80")
    phone = signed_in(sign_in(phone_client, email, user_agent="Tutela iOS 2.1"))

    listed = client.get(f"{API}/sessions", headers=laptop)
    assert listed.status_code == 200
    seen = {(s["address"], s["user_agent"], s["current"]) for s in listed.json()}
    assert seen == {
        ("testclient", "Firefox/128 on the laptop", True),
        ("203.0.113.80", "Tutela iOS 2.1", False),
    }
    other_id = next(s["id"] for s in listed.json() if not s["current"])

    assert client.delete(f"{API}/sessions/{other_id}", headers=laptop).status_code == 204
    ended = phone_client.get(f"{API}/me", headers=phone)
    assert ended.status_code == 401
    assert [s["current"] for s in client.get(f"{API}/sessions", headers=laptop).json()] == [True]


def test_another_accounts_session_cannot_be_ended(
    client: TestClient, home: CreatedHome, other_home: CreatedHome
) -> None:
    """S4: a session id of another account answers 404, and that session goes on."""
    mine = signed_in(sign_in(client, owner_email(home)))
    theirs = signed_in(sign_in(client, owner_email(other_home)))
    their_id = client.get(f"{API}/sessions", headers=theirs).json()[0]["id"]

    r = client.delete(f"{API}/sessions/{their_id}", headers=mine)
    assert r.status_code == 404
    assert r.json()["code"] == "session_not_found"
    assert client.get(f"{API}/me", headers=theirs).status_code == 200


def test_ending_the_other_sessions_keeps_this_one(client: TestClient, home: CreatedHome) -> None:
    """R6: "sign out everywhere else"."""
    email = owner_email(home)
    others = [signed_in(sign_in(client, email)) for _ in range(2)]
    mine = signed_in(sign_in(client, email))

    r = client.post(f"{API}/sessions/end-others", headers=mine)
    assert r.status_code == 200
    assert r.json() == {"ended": 2}
    assert [client.get(f"{API}/me", headers=h).status_code for h in others] == [401, 401]
    assert client.get(f"{API}/me", headers=mine).status_code == 200


# --- 7. factors, step-up and notices (C7, S4, R6) ------------------------------------------


def test_adding_a_factor_in_a_full_session_needs_step_up(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C7: adding a sign-in method is a dangerous action."""
    headers = signed_in(sign_in(client, owner_email(home)))

    refused = client.post(f"{API}/factors/totp", json={}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"
    assert refused.json()["step_up_url"] == f"{API}/auth/step-up"
    step_up(client, headers, password=PASSWORD)
    add_totp(client, container, headers)
    assert [f["kind"] for f in client.get(f"{API}/factors", headers=headers).json()] == ["totp"]


def test_a_factor_can_be_removed_where_mfa_is_optional(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R5 turned off: the holder may go back to a password alone (after step-up)."""
    holder = totp_holder(client, container, owner_email(home))

    r = client.delete(f"{API}/factors/{holder.factor_id}", headers=holder.headers)
    assert r.status_code == 204
    assert client.get(f"{API}/factors", headers=holder.headers).json() == []


def test_the_last_factor_of_a_camera_owner_cannot_be_removed(
    container: Container, home: CreatedHome, variant: Variant
) -> None:
    """R5: where MFA is required, the last factor stays (409 factor_required)."""
    r5, r5_client = variant(mfa_required_for_camera_viewers=True)
    headers = enrolment_session(r5, r5_client, owner_email(home))
    totp, factor_id = add_totp(r5_client, container, headers)
    assert r5_client.get(f"{API}/account/security", headers=headers).json()["stage"] == "full"
    # With a factor, step-up takes the factor: the password alone no longer confirms.
    by_password = r5_client.post(
        f"{API}/auth/step-up", json={"password": PASSWORD}, headers=headers
    )
    assert by_password.status_code == 401
    step_up(r5_client, headers, code=next_code(container, totp))

    r = r5_client.delete(f"{API}/factors/{factor_id}", headers=headers)
    assert r.status_code == 409
    assert r.json()["code"] == "factor_required"
    assert len(r5_client.get(f"{API}/factors", headers=headers).json()) == 1


def test_a_wrong_second_factor_after_the_right_password_is_mailed_without_flooding(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    """S4: a correct password with a failed second factor means the password is known to
    someone; the holder is told, once per quarter of an hour however many codes fail."""
    holder = totp_holder(client, container, owner_email(home))
    intruder = from_source(client, "203.0.113.66")
    intruder.headers["user-agent"] = "curl/8.0"
    started = sign_in(intruder, holder.email)
    for _ in range(2):
        r = second_factor(
            intruder, started.json()["challenge"], code=wrong_code(container, holder.totp)
        )
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_second_factor"
    again = sign_in(client, holder.email)
    second_factor(client, again.json()["challenge"], code=wrong_code(container, holder.totp))
    container.deliver_notices()
    told = mails(container, to=holder.email, subject=SUBJECT_FACTOR_FAILED)
    assert len(told) == 1
    assert "203.0.113.66" in body(told[0])
    assert "  Device:  curl" in body(told[0]).splitlines()  # described, not the raw UA

    clock.advance(timedelta(minutes=16))
    later = sign_in(client, holder.email)
    second_factor(client, later.json()["challenge"], code=wrong_code(container, holder.totp))
    container.deliver_notices()
    assert len(mails(container, to=holder.email, subject=SUBJECT_FACTOR_FAILED)) == 2


def test_five_wrong_codes_end_the_sign_in_attempt(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S4: a challenge takes a handful of guesses, then the password must be given again."""
    holder = totp_holder(client, container, owner_email(home))
    started = sign_in(client, holder.email)
    challenge = started.json()["challenge"]
    for _ in range(5):
        second_factor(client, challenge, code=wrong_code(container, holder.totp))

    late = second_factor(client, challenge, code=next_code(container, holder.totp))
    assert late.status_code == 401
    assert late.json()["code"] == "challenge_expired"


def test_a_sign_in_from_a_new_device_is_announced_and_from_a_known_one_is_not(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """R6: the holder hears of sign-ins from devices not seen before."""
    email = owner_email(home)
    first = sign_in(from_source(client, "198.51.100.31"), email, user_agent="Firefox/128")
    signed_in(first)
    told = mails(container, to=email, subject=SUBJECT_NEW_DEVICE)
    assert len(told) == 1
    assert "198.51.100.31" in body(told[0])
    # A short description from an allow-list, never the client's User-Agent text.
    assert "  Device:  Firefox" in body(told[0]).splitlines()

    signed_in(sign_in(client, email, device=first.json()["device_token"]))
    assert len(mails(container, to=email, subject=SUBJECT_NEW_DEVICE)) == 1
    signed_in(sign_in(client, email))
    assert len(mails(container, to=email, subject=SUBJECT_NEW_DEVICE)) == 2


def test_a_wrong_second_factor_is_mailed_with_the_answer(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S4: in the embedded shape (no worker) the notice must not wait for another request."""
    holder = totp_holder(client, container, owner_email(home))
    started = sign_in(client, holder.email)
    second_factor(client, started.json()["challenge"], code=wrong_code(container, holder.totp))

    assert mails(container, to=holder.email, subject=SUBJECT_FACTOR_FAILED)


# --- 8. R5: owners of homes with cameras must enrol ---------------------------------------


def test_a_camera_owner_without_a_factor_must_enrol_before_anything_else(
    container: Container, home: CreatedHome, variant: Variant
) -> None:
    """R5: the first sign-in (the password, then the emailed link, since a password alone
    must not choose the first factor) opens an enrolment session; enrolling (no step-up
    needed) makes it a full one."""
    r5, r5_client = variant(mfa_required_for_camera_viewers=True)
    headers = enrolment_session(r5, r5_client, owner_email(home))

    blocked = r5_client.get(f"{API}/profiles", headers=headers)
    assert blocked.status_code == 403
    assert blocked.json()["code"] == "mfa_enrolment_required"
    security = r5_client.get(f"{API}/account/security", headers=headers).json()
    assert (security["stage"], security["mfa_required"]) == ("enrol", True)
    add_totp(r5_client, container, headers)

    assert r5_client.get(f"{API}/profiles", headers=headers).status_code == 200
    assert r5_client.get(f"{API}/account/security", headers=headers).json()["stage"] == "full"


def test_every_adult_of_a_camera_home_is_asked_to_enrol(
    container: Container, variant: Variant, unique: str
) -> None:
    """R5 asks it of every adult who can see camera media, not of owners only: the other
    adult of a home with a camera gets a session that can only enrol a factor."""
    home = make_home(container, tag=unique + "m", second_adult=True)
    r5, r5_client = variant(mfa_required_for_camera_viewers=True)
    member = next(email for email in home.accounts if email.startswith("bruno."))

    headers = enrolment_session(r5, r5_client, member)
    refused = r5_client.get(f"{API}/profiles", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "mfa_enrolment_required"
