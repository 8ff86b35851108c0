"""The console's privacy page and item deletion (A3, A6, C6), through `create_app`, a
signed-in browser session (cookies) and the real stores."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import make_home, seed_media
from tests.functional.conftest import console_sign_in, owner_email, sign_in
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.erasure.models import ErasureRequest
from tutela.households.service import CreatedHome
from tutela.retention.models import InactiveChild
from tutela.retention.sweep import run_sweep

EVIL = {"origin": "https://evil.example"}


def options(page: str, select_id: str) -> list[str]:
    """The values a <select> offers, the empty placeholder left out."""
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert found is not None, f"no select {select_id}"
    return [v for v in re.findall(r'<option value="([^"]*)"', found.group(1)) if v]


def selected(page: str, select_id: str) -> str | None:
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert found is not None
    chosen = re.search(r'<option value="([^"]*)" selected>', found.group(1))
    return chosen.group(1) if chosen else None


def retention_of(client: TestClient, home: CreatedHome, profile: uuid.UUID) -> dict[str, object]:
    r = client.get(
        f"/api/v1/profiles/{profile}/retention", headers=sign_in(client, owner_email(home))
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def voice_choice(body: dict[str, object]) -> object:
    kinds = body["kinds"]
    assert isinstance(kinds, list)
    return next(k["choice"] for k in kinds if k["kind"] == "voice")


def readable(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    try:
        container.vault.keys.item_key(household_id=household_id, item_id=item_id)
    except KeyUnavailable:
        return False
    return True


# --- the privacy page: automatic deletion (A6, C9) -------------------------------------


def test_the_privacy_page_needs_a_sign_in(client: TestClient) -> None:
    r = client.get("/account/privacy", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login"


def test_a_parent_sees_each_profile_and_a_child_is_never_offered_never(
    client: TestClient, home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    page = client.get("/account/privacy")
    assert page.status_code == 200
    child, me = home.child_profiles[0], home.adult_profiles[owner_email(home)]
    assert "Lily Marchetti" in page.text
    assert "Ana Marchetti" in page.text
    assert page.text.count("<table") == 2
    for kind in ("voice", "video", "snapshot", "location"):
        assert options(page.text, f"choice-{child}-{kind}") == ["3m", "18m"]
        assert options(page.text, f"choice-{me}-{kind}") == ["3m", "18m", "never"]
        assert f'<label class="sr" for="choice-{child}-{kind}">' in page.text
    # Nothing chosen yet: the page says so instead of showing a choice nobody made.
    assert selected(page.text, f"choice-{child}-voice") is None
    assert "Not chosen" in page.text
    # The policy's maximum for a child's voice (30 days) is shown beside the choice.
    card = re.search(rf'id="profile-{child}"(.*?)</section>', page.text, re.S)
    assert card is not None
    row = re.search(r'<tr data-kind="voice">(.*?)</tr>', card.group(1), re.S)
    assert row is not None
    assert "<td>30 days</td>" in row.group(1)


def test_the_home_and_profile_pages_link_to_the_privacy_page(
    client: TestClient, home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    assert 'href="/account/privacy"' in client.get("/").text
    assert 'href="/account/privacy"' in client.get(f"/profiles/{home.child_profiles[0]}").text


def test_a_saved_choice_is_kept_and_shown(client: TestClient, home: CreatedHome) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))

    r = client.post(
        f"/account/privacy/{child}/auto-delete",
        data={"kind": "voice", "choice": "3m"},
        follow_redirects=False,
    )

    assert r.status_code == 303
    assert r.headers["location"].startswith(f"/account/privacy?saved=voice&profile={child}")
    page = client.get(r.headers["location"])
    assert (
        "Saved: 3 months for Lily Marchetti's voice recordings. They are deleted after 30 days,"
        " the policy's shorter limit." in page.text
    )
    assert selected(page.text, f"choice-{child}-voice") == "3m"
    assert voice_choice(retention_of(client, home, child)) == "3m"


def test_never_for_a_child_is_refused_with_the_reason_shown(
    client: TestClient, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))

    r = client.post(
        f"/account/privacy/{child}/auto-delete", data={"kind": "voice", "choice": "never"}
    )

    assert r.status_code == 422
    assert "text/html" in r.headers["content-type"]
    assert "must be deleted automatically after 3 or 18 months" in r.text
    assert 'role="alert"' in r.text
    assert voice_choice(retention_of(client, home, child)) is None


def test_an_unknown_kind_is_refused_on_the_page(client: TestClient, home: CreatedHome) -> None:
    console_sign_in(client, owner_email(home))
    r = client.post(
        f"/account/privacy/{home.child_profiles[0]}/auto-delete",
        data={"kind": "dreams", "choice": "3m"},
    )
    assert r.status_code == 422
    assert "Unknown kind of data." in r.text


def test_another_adults_or_households_profile_cannot_be_set(
    client: TestClient, container: Container, unique: str, other_home: CreatedHome
) -> None:
    home = make_home(container, tag=unique + "two", second_adult=True)
    bruno_email = next(e for e in home.accounts if e.startswith("bruno."))
    console_sign_in(client, owner_email(home))
    page = client.get("/account/privacy").text
    # Living together is not consent: the owner does not manage another adult's data.
    assert "Bruno Marchetti" not in page
    for profile in (home.adult_profiles[bruno_email], other_home.child_profiles[0]):
        r = client.post(
            f"/account/privacy/{profile}/auto-delete", data={"kind": "voice", "choice": "3m"}
        )
        assert r.status_code == 404
        assert "No such profile." in r.text
    # Bruno is no guardian of the child: his page shows only himself.
    client.cookies.clear()
    console_sign_in(client, bruno_email)
    page = client.get("/account/privacy").text
    assert "Bruno Marchetti" in page
    assert "Lily Marchetti" not in page


def test_a_cross_site_form_cannot_change_a_choice(client: TestClient, home: CreatedHome) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = client.post(
        f"/account/privacy/{child}/auto-delete",
        data={"kind": "voice", "choice": "3m"},
        headers=EVIL,
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert voice_choice(retention_of(client, home, child)) is None


# --- keeping an inactive child's profile (A3) ------------------------------------------


def test_a_guardian_keeps_an_inactive_child_from_the_console(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    clock.advance(timedelta(days=549))
    run_sweep(container)
    console_sign_in(client, owner_email(home))

    page = client.get("/account/privacy").text
    assert "This profile has not been used since" in page
    assert "it will be erased on" in page
    assert f'action="/account/privacy/{child}/keep"' in page

    r = client.post(f"/account/privacy/{child}/keep", follow_redirects=False)

    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Kept from erasure by you on" in page
    assert "in the console" in page
    assert "This profile has not been used since" not in page
    with container.stores.session() as s:
        row = s.scalars(select(InactiveChild).where(InactiveChild.profile_id == child)).one()
        assert row.outcome == "kept"
        assert row.kept_how == "console"
        assert row.kept_by == f"account:{home.accounts[owner_email(home)]}"
        assert row.decided_at == clock.now()
    # Nothing pending any more: a second keep is refused on the page, not as JSON.
    again = client.post(f"/account/privacy/{child}/keep")
    assert again.status_code == 409
    assert "not awaiting erasure for inactivity" in again.text


def test_a_cross_site_form_cannot_keep_a_profile(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    clock.advance(timedelta(days=549))
    run_sweep(container)
    console_sign_in(client, owner_email(home))
    r = client.post(
        f"/account/privacy/{child}/keep",
        headers={"sec-fetch-site": "cross-site"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    with container.stores.session() as s:
        row = s.scalars(select(InactiveChild).where(InactiveChild.profile_id == child)).one()
        assert row.outcome == "pending"


# --- deleting one item from the profile page (C6) --------------------------------------


@pytest.fixture
def media(container: Container, home: CreatedHome) -> dict[str, list[uuid.UUID]]:
    return seed_media(container, home, voices=2, clips=1)


def test_a_parent_deletes_a_recording_from_the_profile_page(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    doomed, kept = media["voice"]
    doomed_transcript = media["transcript"][0]
    console_sign_in(client, owner_email(home))
    before = client.get(f"/profiles/{child}").text
    assert f'action="/profiles/{child}/items/{doomed}/erase"' in before
    assert "Delete this recording for good" in before
    assert "<details" in before

    r = client.post(f"/profiles/{child}/items/{doomed}/erase", follow_redirects=False)

    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(f"/profiles/{child}?erased=")
    request_id = uuid.UUID(location.rsplit("=", 1)[1])
    page = client.get(location).text
    assert "unreadable now" in page
    assert f"/api/v1/receipts/{request_id}" in page
    assert str(doomed) not in page
    assert f'data-item-id="{kept}"' in page
    # Its key, and its transcript's, are gone: the data is unreadable wherever it lies.
    assert not readable(container, home.household_id, doomed)
    assert not readable(container, home.household_id, doomed_transcript)
    assert readable(container, home.household_id, kept)
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        assert (row.household_id, row.scope_kind) == (home.household_id, "item")
        assert row.requester_kind == "guardian"
        assert row.requested_by == f"account:{home.accounts[owner_email(home)]}"


def test_a_made_up_message_is_not_shown(client: TestClient, home: CreatedHome) -> None:
    console_sign_in(client, owner_email(home))
    page = client.get(
        f"/profiles/{home.child_profiles[0]}", params={"erased": "call 0900 to restore"}
    )
    assert "unreadable now" not in page.text
    assert "0900" not in page.text


def test_a_cross_site_form_cannot_delete_an_item(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child, item = home.child_profiles[0], media["voice"][0]
    console_sign_in(client, owner_email(home))
    r = client.post(f"/profiles/{child}/items/{item}/erase", headers=EVIL, follow_redirects=False)
    assert r.status_code == 403
    assert readable(container, home.household_id, item)
    with container.stores.session() as s:
        assert s.scalars(select(ErasureRequest)).first() is None


def test_another_households_item_is_not_found(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    other_home: CreatedHome,
    media: dict[str, list[uuid.UUID]],
) -> None:
    their_item = seed_media(container, other_home, voices=1, clips=0)["voice"][0]
    console_sign_in(client, owner_email(home))
    for profile in (other_home.child_profiles[0], home.child_profiles[0]):
        r = client.post(f"/profiles/{profile}/items/{their_item}/erase", follow_redirects=False)
        assert r.status_code == 404
    # Our own item named under another profile than its own is not found either.
    own = media["voice"][0]
    r = client.post(
        f"/profiles/{other_home.child_profiles[0]}/items/{own}/erase", follow_redirects=False
    )
    assert r.status_code == 404
    assert readable(container, other_home.household_id, their_item)
    assert readable(container, home.household_id, own)


def test_an_item_of_a_profile_the_account_may_not_see_is_not_found(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique + "two", second_adult=True)
    bruno_email = next(e for e in home.accounts if e.startswith("bruno."))
    child = home.child_profiles[0]
    voice = seed_media(container, home, voices=1, clips=0)["voice"][0]
    console_sign_in(client, bruno_email)
    r = client.post(f"/profiles/{child}/items/{voice}/erase", follow_redirects=False)
    assert r.status_code == 404
    assert readable(container, home.household_id, voice)


def test_deleting_needs_a_sign_in(
    client: TestClient, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    r = client.post(
        f"/profiles/{home.child_profiles[0]}/items/{media['voice'][0]}/erase",
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
