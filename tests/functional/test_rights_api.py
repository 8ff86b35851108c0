"""A parent's rights over a child's data, and an adult's over their own, through the API
(C2, C6, C7, C10): the categories of data held, deleting a selection, a kind or a time
range through the one deletion path, the transcript beside its recording, and a notice in
the requester's mailbox for each request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from tests.factories import make_home, seed_media
from tests.functional.conftest import owner_email, sign_in
from tests.functional.test_erasure_api import erase, listed, readable, stepped_up
from tests.integration.test_erasure_notices import CHILD, adult, two_guardians
from tests.mailbox import notices_to
from tutela.container import Container
from tutela.erasure.models import ErasureRequest
from tutela.households.service import CreatedHome

API = "/api/v1"
KINDS = ["voice", "transcript", "video", "snapshot", "thumbnail", "location"]


def requests_made(container: Container) -> int:
    with container.stores.session() as s:
        return int(s.scalar(select(func.count()).select_from(ErasureRequest)) or 0)


@contextmanager
def item_queries(container: Container) -> Iterator[list[str]]:
    """The statements that read the items table while the block runs."""
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM items" in statement:
            seen.append(statement)

    engine = container.stores.main
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def at(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


# --- the categories of data held (C6, C2) ----------------------------------------------


def test_a_parent_sees_what_is_held_about_a_child_by_category(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    older = seed_media(container, home, voices=1, clips=0, days_ago=20)
    newer = seed_media(container, home, voices=2, clips=1, days_ago=2)
    headers = sign_in(client, owner_email(home))

    r = client.get(f"{API}/profiles/{child}/summary", headers=headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["profile_id"], body["profile_kind"], body["name"]) == (
        str(child),
        "child",
        "Lily Marchetti",
    )
    by_kind = {c["kind"]: c for c in body["categories"]}
    assert sorted(by_kind) == sorted(KINDS)
    counts = {k: c["count"] for k, c in by_kind.items()}
    assert counts == {
        "voice": 3,
        "transcript": 3,
        "video": 1,
        "thumbnail": 1,
        "location": 2,
        "snapshot": 0,
    }
    assert body["count"] == 10
    assert body["total_bytes"] == sum(c["total_bytes"] for c in body["categories"]) > 0
    voice = by_kind["voice"]
    now = container.clock.now()
    assert at(voice["oldest_captured_at"]) == now - timedelta(days=20)
    assert at(voice["newest_captured_at"]) == now - timedelta(days=2)
    assert by_kind["snapshot"]["oldest_captured_at"] is None
    assert by_kind["snapshot"]["total_bytes"] == 0
    # Plain words, and what the COPPA Rule makes of a child's voice, image and location (C2).
    assert "A child's voice is the child's personal information" in voice["description"]
    assert "geolocation" in by_kind["location"]["description"]
    assert "image" in by_kind["video"]["description"]
    assert voice["title"] == "Voice recordings"
    assert len(older["voice"]) + len(newer["voice"]) == 3


def test_the_summary_is_one_grouped_query_however_many_items(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    seed_media(container, home, voices=6, clips=3)
    headers = sign_in(client, owner_email(home))
    with item_queries(container) as seen:
        one = client.get(f"{API}/profiles/{home.child_profiles[0]}/summary", headers=headers)
        every = client.get(f"{API}/summary", headers=headers)
    assert one.status_code == every.status_code == 200
    assert len(seen) == 2, seen
    assert all("GROUP BY" in s for s in seen)


def test_every_visible_profile_has_its_summary_and_no_other(
    client: TestClient, container: Container, unique: str, other_home: CreatedHome
) -> None:
    home = make_home(container, tag=unique + "two", second_adult=True)
    seed_media(container, home)
    ana_email = owner_email(home)
    bruno_email = next(e for e in home.accounts if e.startswith("bruno."))
    ana = sign_in(client, ana_email)

    every = client.get(f"{API}/summary", headers=ana).json()

    assert {s["profile_id"] for s in every} == {
        str(home.adult_profiles[ana_email]),
        str(home.child_profiles[0]),
    }
    own = next(s for s in every if s["profile_kind"] == "adult")
    assert own["count"] == 0
    assert "personal information" not in " ".join(c["description"] for c in own["categories"])
    # Another household's child, and another adult of the home: not found, nothing told.
    for profile in (other_home.child_profiles[0], home.adult_profiles[bruno_email]):
        r = client.get(f"{API}/profiles/{profile}/summary", headers=ana)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
    # Bruno is no guardian of the child: he sees only himself.
    bruno = sign_in(client, bruno_email)
    r = client.get(f"{API}/profiles/{home.child_profiles[0]}/summary", headers=bruno)
    assert r.status_code == 404
    assert [s["name"] for s in client.get(f"{API}/summary", headers=bruno).json()] == [
        "Bruno Marchetti"
    ]
    assert client.get(f"{API}/summary").status_code == 401


def test_what_is_being_erased_is_no_longer_counted(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    made = seed_media(container, home, voices=2, clips=0)
    headers = sign_in(client, owner_email(home))
    assert erase(client, headers, scope="item", item_id=str(made["voice"][0])).status_code == 202
    body = client.get(f"{API}/profiles/{child}/summary", headers=headers).json()
    counts = {c["kind"]: c["count"] for c in body["categories"]}
    assert (counts["voice"], counts["transcript"]) == (1, 1)


# --- deleting a selection (C6, C7) -----------------------------------------------------


def test_a_parent_deletes_a_selection_and_only_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    made = seed_media(container, home, voices=3, clips=1)
    first, second, kept = made["voice"]
    clip = made["video"][0]
    headers = sign_in(client, owner_email(home))
    chosen = [str(first), str(clip), str(first)]

    # Anything but one item is bulk: a fresh second factor (or the password) first (C7).
    refused = erase(client, headers, scope="items", profile_id=str(child), item_ids=chosen)
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"
    headers = stepped_up(client, owner_email(home))
    r = erase(client, headers, scope="items", profile_id=str(child), item_ids=chosen)

    assert r.status_code == 202, r.text
    assert r.json()["requested_by"] == "guardian"
    # Unreadable with the answer: the chosen items, their transcript and thumbnail.
    for gone in (first, clip, made["transcript"][0], made["thumbnail"][0]):
        assert not readable(container, home.household_id, gone)
    for left in (second, kept, made["transcript"][1], made["location"][0]):
        assert readable(container, home.household_id, left)
    assert container.erasure.run_pending().completed == 1
    # Once verified, the guardian is told, with the signed receipt's address (A8).
    container.deliver_notices()
    done = [
        t for t in notices_to(container.settings.mail_path, owner_email(home)) if "is complete" in t
    ]
    assert len(done) == 1
    assert f"{container.settings.origin}/api/v1/receipts/{r.json()['id']}" in done[0]
    receipt = client.get(f"{API}/receipts/{r.json()['id']}").json()
    assert receipt["receipt"]["counts"] == {"voice": 1, "transcript": 1, "video": 1, "thumbnail": 1}
    left = listed(client, headers)
    assert str(first) not in left and str(clip) not in left
    assert {str(second), str(kept)} <= left


def test_a_selection_naming_anything_not_the_profiles_starts_nothing(
    client: TestClient,
    container: Container,
    unique: str,
    home: CreatedHome,
    other_home: CreatedHome,
) -> None:
    child = home.child_profiles[0]
    ours = seed_media(container, home, voices=1, clips=0)["voice"][0]
    mine = seed_media(
        container, home, profile=home.adult_profiles[owner_email(home)], voices=1, clips=0
    )["voice"][0]
    theirs = seed_media(container, other_home, voices=1, clips=0)["voice"][0]
    headers = stepped_up(client, owner_email(home))

    for stranger in (theirs, mine, uuid.uuid4()):
        r = erase(
            client,
            headers,
            scope="items",
            profile_id=str(child),
            item_ids=[str(ours), str(stranger)],
        )
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"
    # Naming another household's profile is not found either.
    r = erase(
        client,
        headers,
        scope="items",
        profile_id=str(other_home.child_profiles[0]),
        item_ids=[str(theirs)],
    )
    assert r.status_code == 404
    assert requests_made(container) == 0
    for item, household in (
        (ours, home.household_id),
        (mine, home.household_id),
        (theirs, other_home.household_id),
    ):
        assert readable(container, household, item)


def test_a_selection_is_bounded_and_only_for_items(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = str(home.child_profiles[0])
    headers = stepped_up(client, owner_email(home))
    many = [str(uuid.uuid4()) for _ in range(501)]
    r = erase(client, headers, scope="items", profile_id=child, item_ids=many)
    assert r.status_code == 422
    voice = seed_media(container, home, voices=1, clips=0)["voice"][0]
    r = erase(client, headers, scope="profile", profile_id=child, item_ids=[str(voice)])
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_scope"
    assert requests_made(container) == 0


# --- kinds and time ranges ------------------------------------------------------------


def test_a_parent_deletes_a_time_range_and_keeps_the_rest(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    old = seed_media(container, home, voices=1, clips=1, days_ago=30)
    recent = seed_media(container, home, voices=1, clips=1, days_ago=2)
    now = container.clock.now()
    headers = stepped_up(client, owner_email(home))

    r = erase(
        client,
        headers,
        scope="items",
        profile_id=str(child),
        since=(now - timedelta(days=40)).isoformat(),
        until=(now - timedelta(days=10)).isoformat(),
    )

    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    left = listed(client, headers)
    assert not left & {str(i) for ids in old.values() for i in ids}
    assert {str(i) for ids in recent.values() for i in ids} <= left
    # A range that ends before it starts is refused whole.
    backwards = erase(
        client,
        headers,
        scope="items",
        profile_id=str(child),
        since=now.isoformat(),
        until=(now - timedelta(days=1)).isoformat(),
    )
    assert backwards.status_code == 422
    assert backwards.json()["code"] == "invalid_scope"


def test_a_parent_deletes_one_kind_in_a_range(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    old = seed_media(container, home, voices=1, clips=1, days_ago=30)
    recent = seed_media(container, home, voices=1, clips=1, days_ago=2)
    headers = stepped_up(client, owner_email(home))

    r = erase(
        client,
        headers,
        scope="items",
        profile_id=str(child),
        kinds=["location"],
        until=(container.clock.now() - timedelta(days=10)).isoformat(),
    )

    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    left = listed(client, headers)
    assert str(old["location"][0]) not in left
    assert {str(old["voice"][0]), str(old["video"][0]), str(recent["location"][0])} <= left


# --- the transcript beside its recording -----------------------------------------------


def test_a_recordings_detail_holds_its_transcript(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    made = seed_media(container, home, voices=1, clips=1)
    headers = sign_in(client, owner_email(home))
    r = client.get(f"{API}/items/{made['voice'][0]}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["transcript"] == "please play the dinosaur song number 0"
    assert [d["kind"] for d in r.json()["derived"]] == ["transcript"]
    clip = client.get(f"{API}/items/{made['video'][0]}", headers=headers).json()
    assert clip["transcript"] is None


# --- a notice for each request (C6, S8) ------------------------------------------------


def test_each_request_of_a_guardian_is_confirmed_in_their_mailbox_only(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique)
    ana_email, _ = adult(home, "ana")
    bruno_email, _ = adult(home, "bruno")
    child = str(home.child_profiles[0])
    made = seed_media(container, home, voices=3, clips=1)
    mail = container.settings.mail_path
    ana = stepped_up(client, ana_email)
    before = len(notices_to(mail, bruno_email))

    asked = [
        erase(client, ana, scope="item", item_id=str(made["voice"][0])),
        erase(client, ana, scope="items", profile_id=child, item_ids=[str(made["voice"][1])]),
        erase(client, ana, scope="items", profile_id=child, kinds=["video"]),
        erase(
            client,
            ana,
            scope="items",
            profile_id=child,
            until=container.clock.now().isoformat(),
        ),
    ]

    assert [r.status_code for r in asked] == [202] * 4
    confirmations = [t for t in notices_to(mail, ana_email) if "erasure request was received" in t]
    assert len(confirmations) == 4
    for text, r in zip(confirmations, asked, strict=True):
        assert f"Request:  {r.json()['id']}" in text
        assert f"{container.settings.origin}/api/v1/receipts/{r.json()['id']}" in text
        # General words only: never the child's name (A5).
        assert CHILD not in text and "Lily" not in text
    assert "one recording or location record" in confirmations[0]
    assert "chose, one by one" in confirmations[1]
    assert "of the kinds you chose" in confirmations[2]
    assert "from the time you chose" in confirmations[3]
    # Another guardian's deletion of single items is hers to be told of.
    assert len(notices_to(mail, bruno_email)) == before


def test_a_childs_profile_erasure_and_a_closure_reach_every_adult(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique)
    ana_email, _ = adult(home, "ana")
    bruno_email, _ = adult(home, "bruno")
    mail = container.settings.mail_path
    ana = stepped_up(client, ana_email)

    r = erase(client, ana, scope="profile", profile_id=str(home.child_profiles[0]))
    assert r.status_code == 202, r.text
    for email, who in ((ana_email, "you"), (bruno_email, "Ana Marchetti")):
        told = [t for t in notices_to(mail, email) if "is being erased" in t]
        assert len(told) == 1, told
        assert "a child's profile, with everything recorded of the child" in told[0]
        assert f"Asked by: {who}" in told[0]
        assert f"/api/v1/receipts/{r.json()['id']}" in told[0]
        # The household was told: no second, separate confirmation.
        assert not [t for t in notices_to(mail, email) if "request was received" in t]

    closed = erase(client, ana, scope="household")
    assert closed.status_code == 202, closed.text
    for email in (ana_email, bruno_email):
        told = [t for t in notices_to(mail, email) if "your household's account" in t]
        assert len(told) == 1
        assert f"/api/v1/receipts/{closed.json()['id']}" in told[0]
