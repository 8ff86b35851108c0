"""A parent deletes a child's recording and shortens its retention in Debian's Chromium (A6, C6).

The live server, its two households and the browser come from `test_console_browser.py`,
re-registered here: this module gets its own server, so deleting a recording here never
changes what that module's tests see.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import (  # noqa: F401 (the browser's fixtures)
    _quick_failures,
    browser_context_args,
    browser_type_launch_args,
)
from tests.functional import test_console_browser as console
from tests.functional.test_console_browser import Household, open_child_page

pytestmark = pytest.mark.browser

# The fixtures themselves, so the Chromium path, TUTELA_REQUIRE_BROWSER and the server
# setup stay in one place.
console_app = console.console_app
base_url = console.base_url
household = console.household
parent_cookie = console.parent_cookie


def test_a_parent_deletes_a_recording_and_shortens_voice_retention(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)
    doomed, kept = household.recordings
    item = page.locator(f'[data-item-id="{doomed.item_id}"]')
    confirm = item.get_by_role("button", name="Delete this recording for good")
    # Nothing is deleted by one slip: the button shows only once the disclosure is open.
    expect(confirm).to_be_hidden()
    item.locator("summary").click()
    with page.expect_navigation():
        confirm.click()

    erased = re.escape(f"{base_url}/profiles/{household.child_id}?erased=")
    expect(page).to_have_url(re.compile(erased + "[0-9a-f-]{36}$"))
    expect(page.get_by_role("status")).to_contain_text("unreadable now")
    expect(page.get_by_role("status")).to_contain_text("/api/v1/receipts/")
    expect(page.locator(f'[data-item-id="{doomed.item_id}"]')).to_have_count(0)
    expect(page.get_by_text(doomed.transcript)).to_have_count(0)
    expect(page.locator(f'[data-item-id="{kept.item_id}"]')).to_contain_text(kept.transcript)

    page.get_by_role("link", name="Automatic deletion and privacy settings").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Privacy and automatic deletion")
    card = page.locator(f"#profile-{household.child_id}")
    voice = card.get_by_label(f"Delete {household.child_name}'s voice recordings automatically")
    # A child's recordings are always deleted automatically: "never" is not offered.
    expect(voice.locator("option:not([disabled])")).to_have_text(["3 months", "18 months"])
    voice.select_option(label="3 months")
    card.get_by_role("row", name="Voice recordings").get_by_role("button", name="Save").click()

    expect(card.get_by_role("status")).to_contain_text(
        f"Saved: 3 months for {household.child_name}'s voice recordings."
    )
    voice = card.get_by_label(f"Delete {household.child_name}'s voice recordings automatically")
    expect(voice).to_have_value("3m")
    expect(card.get_by_role("row", name="Voice recordings")).to_contain_text("3 months")
