"""A parent who forgot the password gets back in through the emailed link, in Debian's
Chromium (R6): the token travels in the URL fragment and the page's script carries it.

The live server and its households come from `test_console_browser.py`, re-registered
here, so changing the parent's password here never changes what that module sees.
"""

from __future__ import annotations

import re
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from playwright.sync_api import Page, expect

from tests.browser import (  # noqa: F401 (the browser's fixtures)
    _quick_failures,
    browser_context_args,
    browser_type_launch_args,
)
from tests.functional import test_console_browser as console
from tests.functional.test_console_browser import Household, sign_in
from tests.functional.test_recovery_api import NEW_PASSWORD, SUBJECT_RESET

pytestmark = pytest.mark.browser

console_app = console.console_app
base_url = console.base_url
household = console.household

LINK = re.compile(r"(http://localhost:\d+/recover#tsr_[A-Za-z0-9_\-]+)")


def newest_link(tmp_path_factory: pytest.TempPathFactory, base_url: str, to: str) -> str:
    """The link of the newest reset email to `to` written by this module's server (sent
    just after the answer, so it may take a moment)."""
    deadline = time.monotonic() + 5
    while not (found := _links(tmp_path_factory, base_url, to)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, "no reset email"
    return max(found)[1]


def _links(
    tmp_path_factory: pytest.TempPathFactory, base_url: str, to: str
) -> list[tuple[float, str]]:
    parser = BytesParser(policy=policy.default)
    found: list[tuple[float, str]] = []
    for path in tmp_path_factory.getbasetemp().glob("tutela-home*/mail/*.eml"):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if message["Subject"] != SUBJECT_RESET or to not in str(message["To"]):
            continue
        match = LINK.search(str(message.get_content()))
        if match is not None and match.group(1).startswith(base_url):
            found.append((path.stat().st_mtime, match.group(1)))
    return found


def test_a_parent_resets_a_forgotten_password(
    page: Page, base_url: str, household: Household, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill(household.email)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("status")).to_contain_text("If an account exists")

    page.goto(newest_link(tmp_path_factory, base_url, household.email))
    expect(page).to_have_url(f"{base_url}/recover")  # the fragment is gone from the bar
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("textbox", name="New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("status")).to_contain_text("Every session of your account has ended")

    sign_in(page, household.email, NEW_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your household")
