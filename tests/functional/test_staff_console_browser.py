"""The staff console in Debian's Chromium at http://localhost: employees enrol and sign in (R4).

A privacy officer must use WebAuthn, which browsers allow only at a host name, never an
IP address: the console is served at `localhost`, and Chromium's virtual authenticator
plays the passkey. A support employee scans the authenticator's QR code (here: reads the
key printed under it) and signs in with its codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from tests.browser import (  # noqa: F401 (the browser's fixtures)
    _quick_failures,
    browser_context_args,
    browser_type_launch_args,
    console_settings,
    loopback_listener,
    prepared_app,
    serving,
    virtual_authenticator,
)
from tutela.container import Container
from tutela.identity.models import SignInSession
from tutela.identity.staff import add_staff

pytestmark = pytest.mark.browser

NEW_PASSWORD = "kettle drum under a paper moon"
SCREENSHOT = Path("/tmp/staff-security-qr.png")


@dataclass(frozen=True)
class Staff:
    officer: str
    officer_password: str
    support: str
    support_password: str
    door: str
    door_password: str
    container: Container


def _employee(container: Container, email: str, role: str) -> str:
    with container.stores.session() as s:
        added = add_staff(
            s,
            container.vault.keys,
            container.hasher,
            email=email,
            roles=[role],
            now=container.clock.now(),
        )
    return added.initial_password


@pytest.fixture(scope="session")
def staff_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Staff]]:
    """The app at http://localhost:PORT (a host name, so WebAuthn works) with employees."""
    home = tmp_path_factory.mktemp("tutela-staff-home")
    listener, origin = loopback_listener()
    settings = console_settings(home, origin)
    assert settings.rp_id == "localhost"
    app = prepared_app(settings)
    container: Container = app.state.container
    staff = Staff(
        officer="pia@operator.example",
        officer_password=_employee(container, "pia@operator.example", "privacy_officer"),
        support="sam@operator.example",
        support_password=_employee(container, "sam@operator.example", "support"),
        door="eve@operator.example",
        door_password=_employee(container, "eve@operator.example", "support"),
        container=container,
    )
    with serving(app, listener):
        yield origin, staff


@pytest.fixture(scope="session")
def base_url(staff_console: tuple[str, Staff]) -> str:
    return staff_console[0]


@pytest.fixture(scope="session")
def staff(staff_console: tuple[str, Staff]) -> Staff:
    return staff_console[1]


def virtual_passkey(page: Page) -> None:
    virtual_authenticator(page)


def staff_sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/staff/login")
    page.get_by_label("Work email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Continue").click()


def choose_password(page: Page, current: str) -> None:
    page.get_by_label("Current password").fill(current)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()


def test_a_privacy_officer_enrols_a_passkey_at_localhost_and_signs_in_with_it(
    page: Page, base_url: str, staff: Staff
) -> None:
    """R4: WebAuthn is required for a role that reaches customer content, and works at
    http://localhost (it would fail at http://127.0.0.1)."""
    virtual_passkey(page)
    staff_sign_in(page, staff.officer, staff.officer_password)
    expect(page).to_have_url(f"{base_url}/staff/security")
    expect(page.get_by_role("alert").first).to_contain_text(
        "Your role reaches customer content: add a passkey or security key"
    )
    page.get_by_label("Name for a new passkey or security key").fill("Work laptop")
    page.get_by_role("button", name="Add a passkey", exact=True).click()
    expect(page).to_have_url(f"{base_url}/staff/security")
    expect(page.get_by_role("row").filter(has_text="Work laptop")).to_have_count(1)
    expect(page.get_by_role("alert").first).to_contain_text("Choose your own password")

    choose_password(page, staff.officer_password)
    expect(page).to_have_url(f"{base_url}/staff")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff console")
    expect(page.get_by_text("Privacy officer")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base_url}/staff/login")
    staff_sign_in(page, staff.officer, NEW_PASSWORD)
    expect(page.get_by_label("Code")).to_have_count(0)  # no code signs this role in
    page.get_by_role("button", name="Use your passkey or security key").click()
    expect(page).to_have_url(f"{base_url}/staff")
    page.get_by_role("link", name="Your sign-in security").click()
    expect(page).to_have_url(f"{base_url}/staff/security")
    expect(page.get_by_role("row").filter(has_text="Work laptop")).to_have_count(1)

    # Step-up (C7) with the passkey once the sign-in's confirmation is stale: an account
    # whose only factor is a passkey has no code to type.
    with staff.container.stores.session() as s:
        s.execute(update(SignInSession).values(stepped_up_at=None))
        s.commit()
    page.reload()
    expect(page.get_by_label("Authenticator or recovery code")).to_have_count(0)
    page.get_by_role("button", name="Confirm with your passkey or security key").click()
    expect(page.get_by_text("(done: valid for a few minutes)")).to_be_visible()


def test_a_support_employee_adds_an_authenticator_from_its_qr_code_and_signs_in(
    page: Page, base_url: str, staff: Staff
) -> None:
    staff_sign_in(page, staff.support, staff.support_password)
    expect(page).to_have_url(f"{base_url}/staff/security")
    page.get_by_role("button", name="Add an authenticator app").click()
    qr = page.locator("#totp-qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 150  # big enough for a phone's camera
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    link = page.get_by_role("link", name="Open in an authenticator app on this device")
    uri = link.get_attribute("href")
    assert uri is not None and uri.startswith("otpauth://totp/Tutela:sam%40operator.example?")
    key = page.locator("#totp-secret").inner_text()
    assert len(key.split(" ")) == 8  # 32 characters in groups of four
    totp = pyotp.TOTP(key.replace(" ", ""))
    assert pyotp.parse_uri(uri).secret == totp.secret
    page.get_by_label("Code shown by the app").fill(totp.now())
    page.get_by_role("button", name="Confirm", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(
        "Authenticator app added. Save your recovery codes."
    )
    choose_password(page, staff.support_password)
    expect(page).to_have_url(f"{base_url}/staff")
    expect(page.get_by_text("with the role: Support.")).to_be_visible()


def test_an_employee_at_the_customers_sign_in_is_sent_to_the_staff_sign_in(
    page: Page, base_url: str, staff: Staff
) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(staff.door)
    page.get_by_label("Password").fill(staff.door_password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This is an employee account: sign in at /staff/login.")
    alert.get_by_role("link", name="Go to the staff sign-in").click()
    expect(page).to_have_url(f"{base_url}/staff/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff sign-in")
