"""A parent verifies their consent for a child in Debian's Chromium, on a 320 px wide
screen with no script (C3, C4, C7): from the consent page's link to the verification
page, a declined card whose message is the card field's description, then a passing
card with the password as step-up, back on the consent page with the ticked purpose on.

The live server, its households and the browser come from `test_console_browser.py`,
re-registered here so this module has its own server (its changes stay here).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import (  # noqa: F401 (the browser's fixtures)
    _quick_failures,
    browser_type_launch_args,
    narrow_screen_without_script,
    no_sideways_scroll,
)
from tests.functional import test_console_browser as console
from tests.functional.test_console_browser import PASSWORD, Household

pytestmark = pytest.mark.browser

console_app = console.console_app
base_url = console.base_url
household = console.household
parent_cookie = console.parent_cookie


browser_context_args = narrow_screen_without_script()


def test_a_parent_verifies_with_a_card_on_a_narrow_screen_without_a_script(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    page.context.add_cookies([parent_cookie])
    page.goto(f"/privacy/{household.unverified_child_id}/consent")
    page.get_by_role(
        "link", name=f"Verify your consent as {household.unverified_child_name}'s parent"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"Verify your consent for {household.unverified_child_name}"
    )
    expect(page.get_by_role("heading", name="Why Tutela asks")).to_be_visible()
    no_sideways_scroll(page)

    card = page.locator("#form-card_check")
    allowed = card.get_by_role(
        "group", name=f"What you allow for {household.unverified_child_name}"
    )
    for box in allowed.get_by_role("checkbox").all():
        expect(box).not_to_be_checked()  # nothing ticked for the parent (C4)
    expect(allowed.get_by_role("checkbox", name="Sharing with other companies")).to_have_count(0)
    card.get_by_label("Card token").fill("tok_declined")
    allowed.get_by_label("Keep recordings").check()
    card.get_by_label("Your password").fill(PASSWORD)
    card.get_by_role("button", name="Check my card").click()

    card = page.locator("#form-card_check")
    expect(card.get_by_role("alert")).to_have_text("The card was declined. Attempts left today: 4.")
    expect(card.get_by_label("Card token")).to_have_accessible_description(
        "This installation uses a test payment provider, so there is no card form: type "
        "tok_ok to pass, or tok_declined to see a refusal. "
        "The card was declined. Attempts left today: 4."
    )
    expect(
        card.get_by_role(
            "group", name=f"What you allow for {household.unverified_child_name}"
        ).get_by_label("Keep recordings")
    ).to_be_checked()  # what was ticked is kept
    expect(page.locator("ul.attempts")).to_contain_text("Payment card check, not verified")
    no_sideways_scroll(page)

    card.get_by_label("Card token").fill("tok_ok")
    card.get_by_role("button", name="Check my card").click()  # the step-up is still fresh

    expect(page.get_by_role("status")).to_contain_text(
        f"Your consent as {household.unverified_child_name}'s parent is verified"
    )
    expect(page.get_by_role("group", name="Keep recordings")).to_contain_text("Now: On")
    expect(page.get_by_role("radio")).not_to_have_count(0)  # the choices can be changed now
    no_sideways_scroll(page)
