"""Employees of the operator: `tutela staff add`, enrolment and their sign-in (R4).

Every employee must have a second factor; roles with a path to customer media must use
WebAuthn. The CLI runs against the test's own stores and master key file.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.functional.test_sign_in_api import (
    API,
    SUBJECT_LINK,
    Variant,
    add_security_key,
    add_totp,
    assertion,
    authenticator,
    fail_from_many_sources,
    mails,
    next_code,
    second_factor,
    sign_in,
    signed_in,
    variant,  # noqa: F401 (a fixture)
)
from tests.softauthn import SoftAuthenticator
from tutela.cli import app
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.identity.models import StaffMember

NEW_PASSWORD = "copper kettle under the stairs"


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI, pointed at the stores and the key file of `container`."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def staff_add(runner: CliRunner, email: str, *roles: str) -> str:
    """`tutela staff add`; the one-time password it prints."""
    args = ["staff", "add", email, *[part for role in roles for part in ("--role", role)]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    found = re.search(r"One-time password \(shown once\): (\S+)", result.output)
    assert found is not None, result.output
    return found.group(1)


def change_password(client: TestClient, headers: dict[str, str], current: str) -> dict[str, str]:
    r = client.post(
        f"{API}/account/password",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    return signed_in(r, "full")


def stage(client: TestClient, headers: dict[str, str]) -> str:
    r = client.get(f"{API}/account/security", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["stage"])


def test_staff_add_prints_a_password_that_opens_only_an_enrolment_session(
    runner: CliRunner, client: TestClient, unique: str
) -> None:
    """R4: the first sign-in of an employee must enrol a second factor; an employee's
    session is no customer's session."""
    email = f"sam.{unique}@operator.example"
    result = runner.invoke(app, ["staff", "add", email, "--role", "support"])
    assert result.exit_code == 0, result.output
    assert "One-time password (shown once): " in result.output
    assert "second factor" in result.output
    password = re.search(r"shown once\): (\S+)", result.output).group(1)  # type: ignore[union-attr]

    r = sign_in(client, email, password, staff=True)
    headers = signed_in(r, "enrol")
    security = client.get(f"{API}/account/security", headers=headers).json()
    assert security["mfa_required"] is True
    assert security["webauthn_required"] is False
    me = client.get(f"{API}/me", headers=headers)
    assert me.status_code == 401
    assert me.json()["code"] == "customer_session_required"
    wrong = sign_in(client, email, "not the printed one", staff=True)
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"
    # The customer sign-in opens no session for an employee: with the right password it
    # names the staff sign-in, with a wrong one it answers as for anyone.
    at_customers = sign_in(client, email, password)
    assert at_customers.status_code == 401
    assert at_customers.json()["code"] == "staff_sign_in_required"
    assert sign_in(client, email, "not it").json()["code"] == "invalid_credentials"


def test_a_reviewer_must_enrol_a_security_key_and_then_sign_in_with_it(
    runner: CliRunner, client: TestClient, container: Container, unique: str
) -> None:
    """R4: a role that reaches customer media needs WebAuthn; an authenticator app does not
    complete the enrolment and does not sign in; the initial password must be replaced."""
    email = f"rita.{unique}@operator.example"
    initial = staff_add(runner, email, "reviewer")
    headers = signed_in(sign_in(client, email, initial, staff=True), "enrol")
    assert client.get(f"{API}/account/security", headers=headers).json()["webauthn_required"]

    totp, totp_id = add_totp(client, container, headers)
    assert stage(client, headers) == "enrol"
    key = authenticator(container)
    add_security_key(client, key, headers)
    assert stage(client, headers) == "change_password"
    change_password(client, headers, initial)

    assert sign_in(client, email, initial, staff=True).status_code == 401
    started = sign_in(client, email, NEW_PASSWORD, staff=True)
    assert started.status_code == 202, started.text
    assert started.json()["factors"] == ["webauthn"]
    by_app = second_factor(client, started.json()["challenge"], code=next_code(container, totp))
    assert by_app.status_code == 401
    assert by_app.json()["code"] == "invalid_second_factor"
    session = signed_in(
        second_factor(client, started.json()["challenge"], webauthn=assertion(key, started))
    )

    # The security key cannot be removed; the authenticator app can.
    factors = client.get(f"{API}/factors", headers=session).json()
    key_id = next(f["id"] for f in factors if f["kind"] == "webauthn")
    kept = client.delete(f"{API}/factors/{key_id}", headers=session)
    assert kept.status_code == 409
    assert kept.json()["code"] == "factor_required"
    assert client.delete(f"{API}/factors/{totp_id}", headers=session).status_code == 204


def test_a_support_employee_may_sign_in_with_an_authenticator_app(
    runner: CliRunner, client: TestClient, container: Container, unique: str
) -> None:
    """R4: roles without a path to customer media may use TOTP."""
    email = f"tom.{unique}@operator.example"
    initial = staff_add(runner, email, "support")
    headers = signed_in(sign_in(client, email, initial, staff=True), "enrol")
    totp, _ = add_totp(client, container, headers)
    assert stage(client, headers) == "change_password"
    change_password(client, headers, initial)

    started = sign_in(client, email, NEW_PASSWORD, staff=True)
    assert started.status_code == 202, started.text
    assert started.json()["factors"] == ["totp"]
    signed_in(second_factor(client, started.json()["challenge"], code=next_code(container, totp)))


def test_the_initial_password_expires_after_72_hours_without_enrolment(
    runner: CliRunner, client: TestClient, clock: FakeClock, unique: str
) -> None:
    """R4: a printed password that was never used to enrol stops working."""
    email = f"una.{unique}@operator.example"
    initial = staff_add(runner, email, "auditor")
    clock.advance(timedelta(hours=71))
    signed_in(sign_in(client, email, initial, staff=True), "enrol")

    clock.advance(timedelta(hours=2))
    expired = sign_in(client, email, initial, staff=True)
    assert expired.status_code == 401
    assert expired.json() == sign_in(client, email, "a wrong password", staff=True).json()


def test_an_unknown_role_is_refused_with_a_clear_message(
    runner: CliRunner, container: Container, unique: str
) -> None:
    """R4: roles decide which factor is required, so a typo must not pass."""
    result = runner.invoke(
        app, ["staff", "add", f"vic.{unique}@operator.example", "--role", "reviwer"]
    )
    assert result.exit_code == 2
    assert "Roles must be among" in result.output
    assert "reviewer" in result.output
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(StaffMember)) == 0


def test_an_employee_cannot_be_added_twice(
    runner: CliRunner, client: TestClient, unique: str
) -> None:
    """R4: one account per employee; the first password stays the valid one."""
    email = f"wes.{unique}@operator.example"
    first = staff_add(runner, email, "support")

    again = runner.invoke(app, ["staff", "add", email.upper(), "--role", "admin"])
    assert again.exit_code == 2
    assert "exists" in again.output
    assert "One-time password" not in again.output
    signed_in(sign_in(client, email, first, staff=True), "enrol")


def reviewer_with_key(
    runner: CliRunner, client: TestClient, container: Container, email: str
) -> tuple[SoftAuthenticator, str]:
    """A reviewer who enrolled a security key and chose a password; (key, device token)."""
    initial = staff_add(runner, email, "reviewer")
    first = sign_in(client, email, initial, staff=True)
    headers = signed_in(first, "enrol")
    key = authenticator(container)
    add_security_key(client, key, headers)
    change_password(client, headers, initial)
    started = sign_in(client, email, NEW_PASSWORD, staff=True)
    done = second_factor(client, started.json()["challenge"], webauthn=assertion(key, started))
    signed_in(done)
    return key, done.json()["device_token"]


def test_at_the_limit_an_employee_gets_no_sign_in_link(
    runner: CliRunner,
    client: TestClient,
    container: Container,
    variant: Variant,  # noqa: F811
    unique: str,
) -> None:
    """R4, S2: an emailed link must not stand in for an employee's password: whoever holds
    the mailbox gets nothing by failing the password on purpose."""
    email = f"xia.{unique}@operator.example"
    reviewer_with_key(runner, client, container, email)
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    fail_from_many_sources(strict, email, 5, staff=True)

    locked = sign_in(strict_client, email, NEW_PASSWORD, staff=True)
    assert locked.status_code == 401
    assert locked.json()["code"] == "sign_in_link_required"
    strict.deliver_notices()
    assert mails(strict, to=email, subject=SUBJECT_LINK) == []


def test_at_the_limit_an_employee_still_signs_in_on_their_own_device(
    runner: CliRunner,
    client: TestClient,
    container: Container,
    variant: Variant,  # noqa: F811
    unique: str,
) -> None:
    """R4, S2: the limit stops guessing, not the employee with their device and key."""
    email = f"yann.{unique}@operator.example"
    key, device = reviewer_with_key(runner, client, container, email)
    strict, strict_client = variant(signin_account_step_up_after=3, signin_account_max_failures=5)
    fail_from_many_sources(strict, email, 5, staff=True)

    started = sign_in(strict_client, email, NEW_PASSWORD, device=device, staff=True)
    assert started.status_code == 202, started.text
    done = second_factor(
        strict_client, started.json()["challenge"], webauthn=assertion(key, started), device=device
    )
    signed_in(done)
