"""A parent reviews what is held about a child and deletes a chosen recording, confirmed
with step-up, in Debian's Chromium, without any script of ours (C6, C7).

The live server, its households and the browser come from `test_console_browser.py`,
re-registered here: this module gets its own server, so deleting here never changes what
that module's tests see.
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
from tests.factories import PASSWORD
from tests.functional import test_console_browser as console
from tests.functional.test_console_browser import Household, open_child_page

pytestmark = pytest.mark.browser

console_app = console.console_app
base_url = console.base_url
household = console.household
parent_cookie = console.parent_cookie


def test_a_parent_deletes_a_chosen_recording_after_confirming_it_is_them(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)
    held = page.get_by_role("table", name=f"Data held about {household.child_name}, by category")
    expect(held.get_by_role("row", name=re.compile("^Voice recordings"))).to_contain_text("2")
    doomed, kept = household.recordings
    item = page.locator(f'[data-item-id="{doomed.item_id}"]')
    item.get_by_label("Choose this recording to delete").check()
    page.get_by_role("button", name="Review the chosen items").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm the deletion")
    expect(page.get_by_text("1 chosen item(s)")).to_be_visible()
    page.get_by_label("I understand that this cannot be undone").check()
    page.get_by_label("Your password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Delete for good").click()

    expect(page).to_have_url(
        re.compile(rf"{re.escape(base_url)}/account/privacy/erasures/[0-9a-f-]{{36}}$")
    )
    expect(page.get_by_role("status")).to_contain_text("/api/v1/receipts/")
    page.goto(f"/profiles/{household.child_id}")
    expect(page.locator(f'[data-item-id="{doomed.item_id}"]')).to_have_count(0)
    expect(page.locator(f'[data-item-id="{kept.item_id}"]')).to_contain_text(kept.transcript)
