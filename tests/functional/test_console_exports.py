"""A parent's copy of a child's data from the console (C6, C7): what a copy holds, asking
for one after confirming it is them, its state in words while a worker packages it, the
download, expiry, and nothing for another household or a cross-site form. Through
`create_app`, a signed-in browser session (cookies) and the real stores; the tests run
the export worker's pass themselves (the test settings turn the embedded worker off)."""

from __future__ import annotations

import html
import io
import json
import re
import uuid
import zipfile
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD, seed_media
from tests.functional.conftest import console_sign_in, owner_email
from tests.functional.test_console_privacy import EVIL
from tests.functional.test_sign_in_api import add_totp, next_code, wrong_code
from tutela.container import Container
from tutela.exports.models import Export, ExportState
from tutela.households.service import CreatedHome


def exports_made(container: Container) -> int:
    with container.stores.session() as s:
        return int(s.scalar(select(func.count()).select_from(Export)) or 0)


def section(page: str) -> str:
    """The profile page's "Download a copy" section."""
    found = re.search(r'<section class="card" id="copies"(.*?)</section>', page, re.S)
    assert found is not None, "no copies section"
    return found.group(1)


def copy_of(page: str, export_id: str) -> str:
    found = re.search(rf'<li class="copy" id="export-{export_id}"(.*?)</li>', page, re.S)
    assert found is not None, f"no copy {export_id}"
    return html.unescape(re.sub(r"\s+", " ", found.group(1)))


def ask(client: TestClient, profile: uuid.UUID, **form: str) -> httpx.Response:
    return client.post(f"/profiles/{profile}/exports", data=form, follow_redirects=False)


def asked_id(location: str, profile: uuid.UUID) -> str:
    found = re.fullmatch(rf"/profiles/{profile}\?export=([0-9a-f-]{{36}})#copies", location)
    assert found is not None, location
    return found.group(1)


@pytest.fixture
def child(container: Container, home: CreatedHome) -> uuid.UUID:
    seed_media(container, home, voices=2, clips=1)
    return home.child_profiles[0]


def test_a_parent_asks_for_a_copy_confirms_it_is_them_and_downloads_it(
    client: TestClient, container: Container, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))

    page = client.get(f"/profiles/{child}")
    copies = html.unescape(section(page.text))
    assert "Download a copy of Lily Marchetti's data" in copies
    # What the copy holds, in plain words (C6).
    assert "in the format it was recorded in" in copies
    assert "transcripts and locations, each as JSON and as CSV" in copies
    assert "a manifest" in copies
    # No fresh step-up yet: the form asks for the password (this account has no factor).
    assert '<label for="export-password">Your password</label>' in copies
    assert "You have not asked for a copy yet." in copies
    assert "<script" not in page.text

    # Asked without confirming: the next page asks for the password, nothing is queued (C7).
    first = ask(client, child)
    assert first.status_code == 200
    assert 'name="password"' in first.text
    assert exports_made(container) == 0
    wrong = ask(client, child, password="not the password at all")
    assert wrong.status_code == 401
    assert 'role="alert"' in wrong.text
    assert exports_made(container) == 0

    done = ask(client, child, password=PASSWORD)
    assert done.status_code == 303, done.text
    export_id = asked_id(done.headers["location"], child)
    page = client.get(done.headers["location"]).text
    assert "Asked for a copy." in section(page)
    queued = copy_of(page, export_id)
    assert 'data-state="queued"' in queued
    assert "Waiting to be packaged." in queued
    assert "Download the copy" not in queued
    assert f'<a href="/profiles/{child}#copies">Refresh</a>' in section(page)
    # Asking again while it is being made answers the same copy, with no new step-up.
    again = ask(client, child)
    assert asked_id(again.headers["location"], child) == export_id
    assert exports_made(container) == 1

    assert container.export_pass() == 1
    page = client.get(f"/profiles/{child}").text
    ready = copy_of(page, export_id)
    assert "Ready: download it until" in ready
    expires = container.clock.now() + timedelta(days=container.settings.export_link_days)
    assert expires.strftime("%b %Y") in ready
    link = f"/api/v1/exports/{export_id}/download"
    assert f'<a href="{link}" download>Download the copy' in ready
    assert "Refresh" not in section(page)

    # The console's session downloads it: a zip with the manifest and the media.
    download = client.get(link)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    package = zipfile.ZipFile(io.BytesIO(download.content))
    names = set(package.namelist())
    assert {"README.txt", "manifest.json", "transcripts.csv", "locations.json"} <= names
    manifest = json.loads(package.read("manifest.json"))
    assert {i["kind"] for i in manifest["items"]} >= {"voice", "video", "location"}

    # The account's page of copies lists it with whose data it is.
    listed = client.get("/account/privacy/exports")
    assert listed.status_code == 200
    row = copy_of(listed.text, export_id)
    assert "Lily Marchetti, asked on" in row and "Ready: download it until" in row
    assert f'href="{link}"' in row


def test_an_account_with_an_authenticator_is_asked_for_a_code(
    client: TestClient, container: Container, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))
    assert client.post("/account/step-up", data={"password": PASSWORD}).status_code == 200
    totp, _ = add_totp(client, container, {})
    container.clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))

    copies = section(client.get(f"/profiles/{child}").text)
    assert '<label for="export-code">Authenticator or recovery code</label>' in copies
    assert 'name="password"' not in copies

    first = ask(client, child)
    assert first.status_code == 200
    assert "Authenticator or recovery code" in first.text
    refused = ask(client, child, code=wrong_code(container, totp))
    assert refused.status_code == 401
    assert exports_made(container) == 0

    done = ask(client, child, code=next_code(container, totp))
    assert done.status_code == 303
    export_id = asked_id(done.headers["location"], child)
    assert "Waiting to be packaged." in copy_of(client.get(f"/profiles/{child}").text, export_id)
    # Confirmed a moment ago: the form asks for nothing more.
    assert 'name="code"' not in section(client.get(f"/profiles/{child}").text)


def test_another_households_profile_is_not_found_and_its_copies_are_not_shown(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    other_home: CreatedHome,
    child: uuid.UUID,
) -> None:
    console_sign_in(client, owner_email(home))
    done = ask(client, child, password=PASSWORD)
    export_id = asked_id(done.headers["location"], child)
    container.export_pass()

    console_sign_in(client, owner_email(other_home))
    # Not found before any step-up is asked for: nothing about the id is revealed.
    for form in ({}, {"password": PASSWORD}):
        refused = ask(client, child, **form)
        assert refused.status_code == 404
        assert "No copy was made" in refused.text
    assert exports_made(container) == 1
    assert export_id not in client.get("/account/privacy/exports").text
    assert client.get(f"/profiles/{child}").status_code == 404
    stolen = client.get(f"/api/v1/exports/{export_id}/download")
    assert stolen.status_code == 404 and stolen.json()["code"] == "not_found"


def test_a_cross_site_form_cannot_ask_for_a_copy(
    client: TestClient, container: Container, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))
    path = f"/profiles/{child}/exports"
    for headers in (EVIL, {"sec-fetch-site": "cross-site"}, {"referer": "https://evil.example/"}):
        r = client.post(path, data={"password": PASSWORD}, headers=headers)
        assert r.status_code == 403, headers
    assert exports_made(container) == 0


def test_asking_needs_a_sign_in(client: TestClient, child: uuid.UUID) -> None:
    r = ask(client, child, password=PASSWORD)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    page = client.get("/account/privacy/exports", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")


def test_an_expired_copy_shows_expired_and_no_link(
    client: TestClient, container: Container, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))
    done = ask(client, child, password=PASSWORD)
    export_id = asked_id(done.headers["location"], child)
    container.export_pass()

    container.clock.advance(timedelta(days=container.settings.export_link_days, seconds=1))
    console_sign_in(client, owner_email(home))  # a week on: a new session
    # Expired as soon as its time is up, before any worker has erased it.
    for path in (f"/profiles/{child}", "/account/privacy/exports"):
        row = copy_of(client.get(path).text, export_id)
        assert 'data-state="expired"' in row
        assert "Expired on" in row and "the copy was deleted" in row
        assert "Download the copy" not in row
    container.export_pass()
    assert container.erasure.run_pending().completed == 1
    row = copy_of(client.get("/account/privacy/exports").text, export_id)
    assert "Expired on" in row
    assert "Signed receipt of its deletion" in row


def test_progress_and_failure_are_said_in_words(
    client: TestClient, container: Container, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))
    done = ask(client, child, password=PASSWORD)
    export_id = asked_id(done.headers["location"], child)
    # What a worker writes as it goes (about once a second), seen between two of its writes.
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, uuid.UUID(export_id)))
        assert row is not None
        row.state, row.items_done = ExportState.PACKAGING, 3
        total = row.items_total
        s.commit()
    page = client.get("/account/privacy/exports").text
    assert f"Being packaged: 3 of {total} items." in copy_of(page, export_id)
    assert '<a href="/account/privacy/exports">Refresh</a>' in page
    assert "http-equiv" not in page  # no page reloads itself under its reader

    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, uuid.UUID(export_id)))
        assert row is not None
        row.state, row.reason = ExportState.FAILED, "packaging_failed"
        s.commit()
    failed = copy_of(client.get(f"/profiles/{child}").text, export_id)
    assert "Failed: the copy could not be made. Ask for a new one." in failed
    assert "Download the copy" not in failed


def test_the_privacy_page_links_to_the_copies(client: TestClient, home: CreatedHome) -> None:
    console_sign_in(client, owner_email(home))
    page = client.get("/account/privacy").text
    assert '<a href="/account/privacy/exports">' in page
    copies = client.get("/account/privacy/exports").text
    assert "You have not asked for a copy yet." in copies
    # Each profile this adult sees: their own and their child's, where a copy is asked for.
    assert f'href="/profiles/{home.child_profiles[0]}#copies"' in copies
    assert f'href="/profiles/{home.adult_profiles[owner_email(home)]}#copies"' in copies
    own = client.get(f"/profiles/{home.adult_profiles[owner_email(home)]}").text
    assert "Download a copy of your data" in html.unescape(section(own))


def test_a_made_up_export_id_in_the_address_is_not_announced(
    client: TestClient, home: CreatedHome, child: uuid.UUID
) -> None:
    console_sign_in(client, owner_email(home))
    page = client.get(f"/profiles/{child}?export={uuid.uuid4()}").text
    assert "Asked for a copy." not in page
