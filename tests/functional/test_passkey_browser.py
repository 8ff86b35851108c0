"""A passkey added in the console, then a sign-in with it alone, in Debian's Chromium (R5).

Chromium's virtual authenticator (CDP `WebAuthn`) plays a phone's passkey: it keeps
discoverable credentials and verifies its user. The app is served at `http://localhost`,
the relying party id WebAuthn needs (an IP address is refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

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
from tests.functional.test_console_browser import (
    PASSWORD,
    _add_home_with_an_authenticator,
    sign_in,
)
from tutela.container import Container
from tutela.identity.models import Factor, FactorKind, SignInSession

pytestmark = pytest.mark.browser

EVA_EMAIL = "eva@example.com"
EVA_TOTP = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U"


@pytest.fixture(scope="session")
def passkey_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Container]]:
    """The app on a free loopback port, reached as `localhost` (the RP id)."""
    home = tmp_path_factory.mktemp("tutela-passkeys")
    listener, origin = loopback_listener()
    settings = console_settings(home, origin, webauthn_rp_id="localhost")
    app = prepared_app(settings)
    container: Container = app.state.container
    _add_home_with_an_authenticator(container, EVA_EMAIL, EVA_TOTP, "Eva Parent")
    with serving(app, listener):
        yield origin, container


@pytest.fixture(scope="session")
def base_url(passkey_app: tuple[str, Container]) -> str:
    return passkey_app[0]


def a_phone_with_passkeys(page: Page) -> dict[str, Any]:
    """A virtual platform authenticator that keeps passkeys and checks its user."""
    cdp, authenticator = virtual_authenticator(page, automaticPresenceSimulation=True)
    return {"cdp": cdp, "id": authenticator}


def test_a_passkey_alone_signs_in_with_no_email_or_password(
    page: Page, base_url: str, passkey_app: tuple[str, Container]
) -> None:
    """R5: Eva adds a passkey after signing in with her password and code; later, on the
    same phone, one button signs her in: no email, no password, no code. The passkey also
    confirms it is her before a dangerous change (step-up, C7)."""
    phone = a_phone_with_passkeys(page)
    sign_in(page, EVA_EMAIL, PASSWORD)
    page.get_by_label("Code").fill(pyotp.TOTP(EVA_TOTP).now())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/")

    page.goto("/account/security")
    page.get_by_label("Name for a new passkey or security key").fill("Eva's phone")
    page.get_by_role("button", name="Add a passkey", exact=True).click()
    expect(page.get_by_role("row").filter(has_text="Eva's phone")).to_have_count(1)
    stored = phone["cdp"].send("WebAuthn.getCredentials", {"authenticatorId": phone["id"]})
    assert [c["isResidentCredential"] for c in stored["credentials"]] == [True]
    assert stored["credentials"][0]["rpId"] == "localhost"

    page.context.clear_cookies()  # signed out, and the device forgotten
    page.goto("/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(f"{base_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your household")

    container = passkey_app[1]
    with container.stores.session() as session:
        passkey = session.scalars(
            select(Factor).where(Factor.kind == FactorKind.WEBAUTHN, Factor.label == "Eva's phone")
        ).one()
        assert passkey.last_used_at is not None
        # Ten minutes later, say: the sign-in no longer counts as a fresh step-up (C7).
        session.execute(update(SignInSession).values(stepped_up_at=None))
        session.commit()

    page.goto("/account/security")
    fresh = page.get_by_text("(done: valid for a few minutes)", exact=False)
    expect(fresh).to_have_count(0)
    page.get_by_role("button", name="Confirm with your passkey or security key").click()
    expect(fresh).to_have_count(1)


def test_without_a_passkey_the_page_says_so_and_keeps_the_password_form(
    page: Page, base_url: str
) -> None:
    """A browser whose authenticator holds no passkey for the site is told to use the
    password; nothing is submitted."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": False,
                "hasUserVerification": False,
                "automaticPresenceSimulation": True,
            }
        },
    )
    page.goto("/login")
    page.evaluate(
        "() => { const real = navigator.credentials.get.bind(navigator.credentials);"
        " navigator.credentials.get = (o) => { o.publicKey.timeout = 500; return real(o); }; }"
    )
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.locator("#webauthn-error")).to_have_text(
        "No passkey answered. Sign in with your email and password instead.", timeout=10_000
    )
    expect(page).to_have_url(f"{base_url}/login")
    expect(page.get_by_label("Password")).to_be_visible()
