"""A customer's view of their items: listing, paging, playback with ranges, and no leaks (C6).

Another household's ids answer 404, exactly like ids that do not exist.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tests.factories import PASSWORD, device_token, jpeg_bytes, wav_bytes
from tests.functional.conftest import owner_email, sign_in, upload_voice
from tutela.container import Container
from tutela.households.service import CreatedHome


def put_voice(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    profile: uuid.UUID,
    minutes_ago: int,
    body: bytes | None = None,
) -> str:
    return upload_voice(
        client,
        container,
        home,
        body=body or wav_bytes(0.2),
        profile=profile,
        minutes_ago=minutes_ago,
    )


def test_pages_walk_every_item_once_newest_first(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    made = [
        put_voice(client, container, home, home.child_profiles[0], minutes_ago=m)
        for m in range(1, 8)
    ]
    headers = sign_in(client, owner_email(home))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/items", params=params, headers=headers).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made  # made oldest-last: minutes_ago 1 is newest


def test_filters_by_profile_kind_and_time(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    own = next(iter(home.adult_profiles.values()))
    recent = put_voice(client, container, home, child, minutes_ago=5)
    put_voice(client, container, home, child, minutes_ago=500)
    mine = put_voice(client, container, home, own, minutes_ago=5)
    headers = sign_in(client, owner_email(home))
    by_profile = client.get(
        "/api/v1/items", params={"profile_id": str(own)}, headers=headers
    ).json()
    assert [i["id"] for i in by_profile["items"]] == [mine]
    since = (container.clock.now() - timedelta(hours=1)).isoformat()
    recent_child = client.get(
        "/api/v1/items", params={"profile_id": str(child), "since": since}, headers=headers
    ).json()
    assert [i["id"] for i in recent_child["items"]] == [recent]
    snaps = client.get("/api/v1/items", params={"kind": "snapshot"}, headers=headers).json()
    assert snaps["items"] == []


def test_range_requests_return_the_exact_bytes(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    body = wav_bytes(2.0)
    item = put_voice(client, container, home, home.child_profiles[0], 1, body)
    headers = sign_in(client, owner_email(home))
    url = f"/api/v1/items/{item}/content"
    for header, start, end in [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, len(body)),
        ("bytes=-50", len(body) - 50, len(body)),
        ("bytes=30000-40000", 30000, len(body)),
    ]:
        r = client.get(url, headers={**headers, "range": header})
        assert r.status_code == 206, header
        assert r.content == body[start:end]
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(body)}"
    r = client.get(url, headers={**headers, "range": f"bytes={len(body)}-"})
    assert r.status_code == 416
    assert r.json()["code"] == "range_not_satisfiable"


def test_another_households_items_and_profiles_answer_404(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    theirs = put_voice(client, container, other_home, other_home.child_profiles[0], 1)
    headers = sign_in(client, owner_email(home))
    missing = str(uuid.uuid4())
    for path in (f"/api/v1/items/{theirs}", f"/api/v1/items/{theirs}/content"):
        r = client.get(path, headers=headers)
        ghost = client.get(path.replace(theirs, missing), headers=headers)
        assert r.status_code == ghost.status_code == 404
        assert r.json()["code"] == ghost.json()["code"] == "item_not_found"
    r = client.get(
        "/api/v1/items", params={"profile_id": str(other_home.child_profiles[0])}, headers=headers
    )
    assert r.status_code == 404
    listed = client.get("/api/v1/items", headers=headers).json()["items"]
    assert theirs not in [i["id"] for i in listed]
    names = [p["name"] for p in client.get("/api/v1/profiles", headers=headers).json()]
    assert "Otto Lindqvist" not in names and "Lily Marchetti" in names


def test_an_adult_does_not_see_another_adults_recordings(
    client: TestClient, container: Container, unique: str
) -> None:
    from tests.factories import make_home

    home = make_home(container, tag=unique, second_adult=True)
    ana, bruno = list(home.accounts)
    ana_item = put_voice(client, container, home, home.adult_profiles[ana], 1)
    child_item = put_voice(client, container, home, home.child_profiles[0], 1)
    headers = sign_in(client, bruno)
    assert client.get(f"/api/v1/items/{ana_item}", headers=headers).status_code == 404
    # Bruno is not the child's guardian in this home either.
    assert client.get(f"/api/v1/items/{child_item}", headers=headers).status_code == 404
    assert [p["kind"] for p in client.get("/api/v1/profiles", headers=headers).json()] == ["adult"]


def test_signing_out_ends_the_token(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    assert client.get("/api/v1/me", headers=headers).json()["email"] == owner_email(home)
    assert client.delete("/api/v1/auth/token", headers=headers).status_code == 204
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "session_ended"


def test_wrong_password_and_unknown_account_get_the_same_answer(
    client: TestClient, home: CreatedHome
) -> None:
    wrong = client.post(
        "/api/v1/auth/token", json={"email": owner_email(home), "password": PASSWORD + "x"}
    )
    unknown = client.post(
        "/api/v1/auth/token", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == {**unknown.json(), "instance": wrong.json()["instance"]}


@pytest.mark.parametrize(
    ("path", "code"),
    [("/api/v1/items", "not_authenticated"), ("/api/v1/profiles", "not_authenticated")],
)
def test_unauthenticated_reads_are_refused(client: TestClient, path: str, code: str) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert r.json()["code"] == code
    r = client.get(path, headers={"authorization": "Bearer tss_forged"})
    assert r.status_code == 401 and r.json()["code"] == "session_ended"


def test_bad_query_values_are_clear_problems(client: TestClient, home: CreatedHome) -> None:
    headers = sign_in(client, owner_email(home))
    r = client.get("/api/v1/items", params={"cursor": "not-a-cursor"}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    r = client.get("/api/v1/items", params={"limit": "100000"}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "page_too_large"
    r = client.get("/api/v1/items/not-a-uuid", headers=headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_snapshots_are_served_with_their_type(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    jpeg = jpeg_bytes()
    r = client.post(
        "/api/v1/ingest/media",
        params={
            "profile_id": str(home.child_profiles[0]),
            "kind": "snapshot",
            "captured_at": container.clock.now().isoformat(),
        },
        content=jpeg,
        headers={
            "authorization": f"Bearer {device_token(home, container, 'camera')}",
            "content-type": "image/jpeg",
        },
    )
    headers = sign_in(client, owner_email(home))
    got = client.get(f"/api/v1/items/{r.json()['id']}/content", headers=headers)
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["cache-control"] == "private, no-store"
    assert got.content == jpeg
