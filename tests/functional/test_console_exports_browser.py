"""A parent asks for a copy of a child's data and downloads it, in Debian's Chromium on a
320 px wide screen with no script at all (C6, C7): the password confirms it is them, a
"Refresh" link follows the packaging, the link gives the zip.

The live server, its households and the browser come from `test_console_browser.py`,
re-registered here so this module has its own server; its embedded worker packages the
copy, as in production.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import (  # noqa: F401 (the browser's fixtures)
    _quick_failures,
    browser_type_launch_args,
    narrow_screen_without_script,
    no_sideways_scroll,
)
from tests.factories import PASSWORD
from tests.functional import test_console_browser as console
from tests.functional.test_console_browser import Household

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/tmp/console-copies.png")

console_app = console.console_app
base_url = console.base_url
household = console.household
parent_cookie = console.parent_cookie


browser_context_args = narrow_screen_without_script(accept_downloads=True)


def test_a_parent_asks_for_a_copy_follows_it_and_downloads_the_zip(
    page: Page,
    base_url: str,
    household: Household,
    parent_cookie: dict[str, Any],
    tmp_path: Path,
) -> None:
    page.context.add_cookies([parent_cookie])
    page.goto(f"/profiles/{household.child_id}")
    copies = page.locator("#copies")
    expect(copies.get_by_role("heading", level=2)).to_have_text(
        f"Download a copy of {household.child_name}'s data"
    )
    box = copies.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 320, box
    copies.get_by_label("Your password").fill(PASSWORD)
    with page.expect_navigation():
        copies.get_by_role("button", name="Ask for a copy").click()

    expect(page.locator("#copies").get_by_role("status").first).to_contain_text("Asked for a copy.")
    download_link = page.locator("#copies").get_by_role(
        "link", name="Download the copy", exact=False
    )
    deadline = time.monotonic() + 20
    while not download_link.count():
        assert time.monotonic() < deadline, "the copy was not packaged in 20 s"
        time.sleep(0.3)
        refresh = page.locator("#copies").get_by_role("link", name="Refresh")
        if refresh.count():
            refresh.click()
        else:
            page.reload()
    expect(page.locator("#copies li.copy").first).to_contain_text("Ready: download it until")
    page.locator("#copies").screenshot(path=str(SCREENSHOT))

    with page.expect_download() as caught:
        download_link.first.click()
    saved = tmp_path / "copy.zip"
    caught.value.save_as(saved)
    with zipfile.ZipFile(saved) as package:
        assert package.testzip() is None
        manifest = json.loads(package.read("manifest.json"))
    assert {i["id"] for i in manifest["items"]} >= {str(r.item_id) for r in household.recordings}

    page.goto("/account/privacy")
    page.get_by_role("link", name="Copies of your data you asked to download").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Copies of your data")
    expect(page.locator("li.copy").first).to_contain_text(f"{household.child_name}, asked on")
    no_sideways_scroll(page)
