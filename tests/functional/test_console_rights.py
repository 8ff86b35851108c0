"""A parent's rights in the console (C2, C6, C7, C10): what is held about a child by
category, and deleting a selection, a kind, a time range, the child's profile or (the
owner) the household's account, each reviewed, confirmed with step-up, and answered
with where its signed receipt will be. Through `create_app`, a signed-in browser session
(cookies) and the real stores."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD, make_home, seed_media
from tests.functional.conftest import console_sign_in, owner_email
from tests.functional.test_console_privacy import EVIL, readable
from tests.mailbox import notices_to
from tutela.container import Container
from tutela.erasure.models import ErasureRequest
from tutela.households.models import Household
from tutela.households.service import CreatedHome


def requests_made(container: Container) -> int:
    with container.stores.session() as s:
        return int(s.scalar(select(func.count()).select_from(ErasureRequest)) or 0)


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """The confirmation form's hidden fields, as a browser would post them back."""
    form = re.search(
        r'<form method="post" action="[^"]*/erase" class="stack">(.*?)</form>', page, re.S
    )
    assert form is not None, "no confirmation form"
    return [
        (html.unescape(n), html.unescape(v))
        for n, v in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)
        )
    ]


def form(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields as the client posts them, a name given many times included."""
    data: dict[str, list[str]] = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return data


def review(client: TestClient, profile: uuid.UUID, data: list[tuple[str, str]]) -> httpx.Response:
    return client.post(f"/profiles/{profile}/erase/review", data=form(data))


def confirm(
    client: TestClient,
    profile: uuid.UUID,
    page: str,
    *,
    password: str | None = PASSWORD,
    ticked: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    data = hidden_fields(page)
    if ticked:
        data.append(("confirm", "yes"))
    if password is not None:
        data.append(("password", password))
    return client.post(
        f"/profiles/{profile}/erase",
        data=form(data),
        headers=headers or {},
        follow_redirects=False,
    )


def request_of(location: str) -> uuid.UUID:
    found = re.fullmatch(r"/account/privacy/erasures/([0-9a-f-]{36})", location)
    assert found is not None, location
    return uuid.UUID(found.group(1))


@pytest.fixture
def media(container: Container, home: CreatedHome) -> dict[str, list[uuid.UUID]]:
    return seed_media(container, home, voices=3, clips=1)


# --- what is held (C6, C2) -------------------------------------------------------------


def test_the_profile_page_shows_what_is_held_by_category_and_how_to_delete_it(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    seed_media(container, home, voices=1, clips=0, days_ago=40)
    console_sign_in(client, owner_email(home))

    page = client.get(f"/profiles/{child}").text

    table = re.search(r'<table class="categories">(.*?)</table>', page, re.S)
    assert table is not None
    voice = re.search(r'<tr data-kind="voice">(.*?)</tr>', table.group(1), re.S)
    assert voice is not None
    assert "<td>4</td>" in voice.group(1)
    oldest = (container.clock.now() - timedelta(days=40)).isoformat()
    assert f'<time datetime="{oldest}">' in voice.group(1)
    assert "A child's voice is the child's personal information" in html.unescape(voice.group(1))
    snapshot = re.search(r'<tr data-kind="snapshot">(.*?)</tr>', table.group(1), re.S)
    assert snapshot is not None and "<td>0</td>" in snapshot.group(1)
    # A recording's transcript is beside its player.
    first = re.search(rf'data-item-id="{media["voice"][0]}">(.*?)</li>', page, re.S)
    assert first is not None and "<audio" in first.group(1)
    assert "please play the dinosaur song number 0" in first.group(1)
    # Each item can be chosen for the selection's form, labelled; no script is needed.
    for item in media["voice"]:
        assert f'value="{item}" form="erase-selection"' in page
    assert page.count("<legend>") >= 4
    assert '<label for="range-since">' in page and '<label for="range-until">' in page
    assert "Lily Marchetti's whole profile" in page
    # Closing the account is the owner's, on the owner's own page.
    assert 'value="household"' not in page
    own = client.get(f"/profiles/{home.adult_profiles[owner_email(home)]}").text
    assert 'value="household"' in own
    assert "Everything recorded of you" in own
    assert "<script" not in page


# --- a selection, step by step (C6, C7) ------------------------------------------------


def test_a_parent_deletes_chosen_items_after_confirming_it_is_them(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    first, second, kept = media["voice"]
    email = owner_email(home)
    console_sign_in(client, email)

    r = review(
        client, child, [("what", "selection"), ("item_id", str(first)), ("item_id", str(second))]
    )

    assert r.status_code == 200, r.text
    assert "2 chosen item(s) of Lily Marchetti" in r.text
    assert 'name="password"' in r.text  # no step-up yet: the password (no factor here)
    assert requests_made(container) == 0
    # Not ticked: refused on the page; a wrong password: refused, nothing started.
    unticked = confirm(client, child, r.text, ticked=False)
    assert unticked.status_code == 422
    assert "Tick the box" in unticked.text
    wrong = confirm(client, child, r.text, password="not my password at all")
    assert wrong.status_code == 401
    assert "That did not confirm it is you." in wrong.text
    assert requests_made(container) == 0
    assert readable(container, home.household_id, first)

    done = confirm(client, child, r.text)

    assert done.status_code == 303, done.text
    request_id = request_of(done.headers["location"])
    page = client.get(done.headers["location"]).text
    assert "Unreadable now" in page
    assert f"/api/v1/receipts/{request_id}" in page
    for gone in (first, second, *media["transcript"][:2]):
        assert not readable(container, home.household_id, gone)
    assert readable(container, home.household_id, kept)
    # Pressed again (a reload, a double click): the same request, nothing new.
    again = confirm(client, child, r.text, password=None)
    assert again.headers["location"] == done.headers["location"]
    assert requests_made(container) == 1
    # The guardian's mailbox has its confirmation, with the receipt's address.
    told = [t for t in notices_to(container.settings.mail_path, email) if "was received" in t]
    assert len(told) == 1 and f"/api/v1/receipts/{request_id}" in told[0]

    assert container.erasure.run_pending().completed == 1
    finished = client.get(done.headers["location"]).text
    assert "A check of every store found nothing left" in finished
    assert f'<a href="/api/v1/receipts/{request_id}">' in finished
    assert client.get(f"/api/v1/receipts/{request_id}").status_code == 200
    listing = client.get(f"/profiles/{child}").text
    assert f'data-item-id="{kept}"' in listing
    assert f'data-item-id="{first}"' not in listing


def test_a_fresh_step_up_is_not_asked_again(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    assert client.post("/account/step-up", data={"password": PASSWORD}).status_code == 200
    r = review(client, child, [("what", "kinds"), ("kind", "voice")])
    assert 'name="password"' not in r.text
    rows = dict(
        re.findall(r'<tr data-kind="(\w+)"><th scope="row">[^<]*</th><td>(\d+)</td>', r.text)
    )
    assert rows == {"voice": "3", "transcript": "3"}

    done = confirm(client, child, r.text, password=None)

    assert done.status_code == 303
    for item in media["voice"] + media["transcript"]:
        assert not readable(container, home.household_id, item)
    for item in media["video"] + media["thumbnail"] + media["location"]:
        assert readable(container, home.household_id, item)


def test_an_empty_or_foreign_selection_deletes_nothing(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    other_home: CreatedHome,
    media: dict[str, list[uuid.UUID]],
) -> None:
    child = home.child_profiles[0]
    theirs = seed_media(container, other_home, voices=1, clips=0)["voice"][0]
    console_sign_in(client, owner_email(home))

    empty = review(client, child, [("what", "selection")])
    assert empty.status_code == 422
    assert "Choose at least one item" in empty.text
    foreign = review(
        client,
        child,
        [("what", "selection"), ("item_id", str(media["voice"][0])), ("item_id", str(theirs))],
    )
    assert foreign.status_code == 404
    assert "Nothing was deleted" in foreign.text
    # Posted straight to the final step, with a made-up key: refused all the same.
    straight = client.post(
        f"/profiles/{child}/erase",
        data={
            "what": "selection",
            "item_id": str(theirs),
            "idempotency": "x" * 24,
            "confirm": "yes",
            "password": PASSWORD,
        },
    )
    assert straight.status_code == 404
    other = review(client, other_home.child_profiles[0], [("what", "kinds"), ("kind", "voice")])
    assert other.status_code == 404
    assert requests_made(container) == 0
    assert readable(container, other_home.household_id, theirs)


def test_a_cross_site_form_cannot_review_or_delete(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    data = [("what", "selection"), ("item_id", str(media["voice"][0]))]
    cross = client.post(f"/profiles/{child}/erase/review", data=form(data), headers=EVIL)
    assert cross.status_code == 403
    page = review(client, child, data).text
    assert confirm(client, child, page, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert requests_made(container) == 0
    assert readable(container, home.household_id, media["voice"][0])


def test_the_forms_need_a_sign_in(client: TestClient, home: CreatedHome) -> None:
    r = client.post(
        f"/profiles/{home.child_profiles[0]}/erase/review",
        data={"what": "kinds", "kind": "voice"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/login")


# --- a time range, a child's profile, the household (C6, C10) --------------------------


def test_a_parent_deletes_a_time_range(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    old = seed_media(container, home, voices=1, clips=1, days_ago=30)
    recent = seed_media(container, home, voices=1, clips=1, days_ago=1)
    now = container.clock.now()
    console_sign_in(client, owner_email(home))
    first, last = (now - timedelta(days=35)).date(), (now - timedelta(days=25)).date()

    backwards = review(
        client,
        child,
        [("what", "range"), ("since", last.isoformat()), ("until", first.isoformat())],
    )
    assert backwards.status_code == 422
    r = review(
        client,
        child,
        [("what", "range"), ("since", first.isoformat()), ("until", last.isoformat())],
    )
    assert r.status_code == 200
    assert f"from {first.isoformat()} up to and including {last.isoformat()}" in r.text

    done = confirm(client, child, r.text)

    assert done.status_code == 303
    for item in (i for ids in old.values() for i in ids):
        assert not readable(container, home.household_id, item)
    for item in (i for ids in recent.values() for i in ids):
        assert readable(container, home.household_id, item)


def test_a_parent_deletes_the_childs_whole_profile(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child = home.child_profiles[0]
    email = owner_email(home)
    console_sign_in(client, email)
    r = review(client, child, [("what", "profile")])
    assert "Lily Marchetti's whole profile" in r.text

    done = confirm(client, child, r.text)

    assert done.status_code == 303
    page = client.get(done.headers["location"]).text
    assert "a child's profile, with everything recorded of the child" in html.unescape(page)
    assert client.get(f"/profiles/{child}").status_code == 404
    for item in media["voice"]:
        assert not readable(container, home.household_id, item)
    told = [t for t in notices_to(container.settings.mail_path, email) if "is being erased" in t]
    assert len(told) == 1


def test_an_adult_deletes_everything_recorded_of_them_and_stays_signed_in(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    me = home.adult_profiles[email]
    mine = seed_media(container, home, profile=me, voices=1, clips=0)
    childs = seed_media(container, home, voices=1, clips=0)
    console_sign_in(client, email)
    r = review(client, me, [("what", "profile")])
    assert "Your account stays open" in r.text

    done = confirm(client, me, r.text)

    assert done.status_code == 303
    assert not readable(container, home.household_id, mine["voice"][0])
    assert readable(container, home.household_id, childs["voice"][0])
    assert client.get("/").status_code == 200


def test_only_the_owner_closes_the_account_and_then_everything_goes(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique + "two", second_adult=True)
    ana = owner_email(home)
    bruno = next(e for e in home.accounts if e.startswith("bruno."))
    bruno_profile = home.adult_profiles[bruno]
    console_sign_in(client, bruno)
    assert 'value="household"' not in client.get(f"/profiles/{bruno_profile}").text
    refused = review(client, bruno_profile, [("what", "household")])
    assert refused.status_code == 403
    assert "Only the household's owner can close it." in html.unescape(refused.text)

    client.cookies.clear()
    console_sign_in(client, ana)
    me = home.adult_profiles[ana]
    r = review(client, me, [("what", "household")])
    assert "every profile, recording, device and sign-in" in r.text

    done = confirm(client, me, r.text)

    assert done.status_code == 200, done.text
    with container.stores.session() as s:
        (request_id,) = s.scalars(select(ErasureRequest.id)).all()
    assert "Your household's account is closed" in done.text
    assert f"/api/v1/receipts/{request_id}" in done.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    for email in (ana, bruno):
        told = [
            t for t in notices_to(container.settings.mail_path, email) if "household's account" in t
        ]
        assert len(told) == 1
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is None
    assert client.get(f"/api/v1/receipts/{request_id}").status_code == 200


def test_a_selection_is_bounded(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    many = [("item_id", str(uuid.uuid4())) for _ in range(501)]
    r = review(client, home.child_profiles[0], [("what", "selection"), *many])
    assert r.status_code == 422
    assert requests_made(container) == 0


def test_one_item_deleted_from_its_card_is_confirmed_in_the_guardians_mailbox(
    client: TestClient, container: Container, home: CreatedHome, media: dict[str, list[uuid.UUID]]
) -> None:
    child, item = home.child_profiles[0], media["voice"][0]
    email = owner_email(home)
    console_sign_in(client, email)
    r = client.post(f"/profiles/{child}/items/{item}/erase", follow_redirects=False)
    assert r.status_code == 303
    request_id = r.headers["location"].rsplit("=", 1)[1]
    told = [t for t in notices_to(container.settings.mail_path, email) if "was received" in t]
    assert len(told) == 1
    assert "one recording or location record" in told[0]
    assert f"/api/v1/receipts/{request_id}" in told[0]
    assert "Lily" not in told[0]
