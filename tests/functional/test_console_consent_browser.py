"""A parent's consent choices in Debian's Chromium, on a 320 px wide screen (C3, C4, C6):
the forms work without a script, each purpose is a labelled group, turning on training
asks for the password first (C7), nothing scrolls sideways, and stopping all recording
takes a confirmation.

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
from tests.functional.test_console_browser import Household

pytestmark = pytest.mark.browser

console_app = console.console_app
base_url = console.base_url
household = console.household
parent_cookie = console.parent_cookie
ADULT = "Ana Parent"


browser_context_args = narrow_screen_without_script()


def test_a_parent_turns_training_on_and_then_stops_all_recording_on_a_narrow_screen(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    page.context.add_cookies([parent_cookie])
    page.goto("/account/privacy")
    page.get_by_role("link", name=f"Consent: what Tutela may do with {ADULT}'s recordings").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Your consent")
    no_sideways_scroll(page)

    training = page.get_by_role("group", name="Training our models")
    expect(training).to_contain_text("Now: Off")
    training.get_by_label("On").check()
    page.get_by_role("button", name="Save these choices").click()
    # Turning on training asks to confirm it is you first, the choice kept (C7).
    confirm = page.get_by_role("group", name="Confirm it is you")
    expect(confirm).to_contain_text("Turning on Training our models")
    expect(page.get_by_role("group", name="Training our models").get_by_label("On")).to_be_checked()
    no_sideways_scroll(page)
    confirm.get_by_label("Your password").fill(console.PASSWORD)
    page.get_by_role("button", name="Save these choices").click()

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    expect(page.get_by_role("group", name="Training our models")).to_contain_text("Now: On")
    expect(page.locator("ol.history")).to_contain_text(
        "You turned on Training our models, in the console, under notice version 1."
    )
    # Sharing stays off: it has a form of its own (C4).
    sharing = page.locator("#separate-third_party_disclosure")
    expect(sharing.get_by_role("group", name="Sharing with other companies")).to_contain_text(
        "Now: Off"
    )
    no_sideways_scroll(page)

    page.get_by_role("link", name="Stop all recording of you").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Stop all recording of you?")
    no_sideways_scroll(page)
    page.get_by_role("button", name="Yes, stop all recording of you").click()

    expect(page.get_by_role("status")).to_contain_text("All further recording of you is stopped")
    for title in ("Keep recordings", "Training our models", "Sharing with other companies"):
        expect(page.get_by_role("group", name=title)).to_contain_text("Now: Off")


def test_a_child_without_a_verified_parent_is_shown_why_nothing_can_be_turned_on(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    page.context.add_cookies([parent_cookie])
    page.goto(f"/privacy/{household.unverified_child_id}/consent")
    expect(
        page.get_by_role("heading", name="A parent's consent is not verified yet")
    ).to_be_visible()
    expect(page.get_by_role("group", name="Keep recordings")).to_contain_text(
        "Off until a parent's consent is verified"
    )
    expect(page.get_by_role("radio")).to_have_count(0)
    no_sideways_scroll(page)
