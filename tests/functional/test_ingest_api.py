"""Device ingestion through the HTTP API: each kind accepted, each refusal clean (R8, C1).

Every refusal answers problem+json (RFC 9457) with a stable code, and leaves no item row,
no item key and no blob behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tests.factories import device_token, jpeg_bytes, mp4_bytes, ogg_opus_bytes, past, wav_bytes
from tests.functional.conftest import owner_email, sign_in, stored
from tests.raw_asgi import media_upload_scope, run_apart
from tutela.container import Container
from tutela.households import service as households
from tutela.households.service import CreatedHome

pytestmark = pytest.mark.usefixtures("container")


def upload(
    client: TestClient,
    token: str,
    profile_id: object,
    body: bytes | Iterator[bytes],
    *,
    kind: str = "voice",
    content_type: str = "audio/wav",
    captured_at: str,
    **params: str,
) -> object:
    return client.post(
        "/api/v1/ingest/media",
        params={"profile_id": str(profile_id), "kind": kind, "captured_at": captured_at, **params},
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": content_type},
    )


def child(home: CreatedHome) -> object:
    return home.child_profiles[0]


def assert_problem(response: object, status: int, code: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:tutela:problem:{code}"
    assert body["detail"] and "Traceback" not in body["detail"]


@pytest.mark.parametrize(
    ("kind", "device", "content_type", "body"),
    [
        ("voice", "voice", "audio/wav", wav_bytes(0.5)),
        ("voice", "voice", "audio/ogg", ogg_opus_bytes()),
        ("video", "camera", "video/mp4", mp4_bytes()),
        ("snapshot", "camera", "image/jpeg", jpeg_bytes()),
    ],
)
def test_each_media_kind_is_stored_and_reads_back_identical(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    kind: str,
    device: str,
    content_type: str,
    body: bytes,
) -> None:
    token = device_token(home, container, device)
    r = upload(
        client,
        token,
        child(home),
        body,
        kind=kind,
        content_type=content_type,
        captured_at=past(container),
    )
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    item = r.json()  # type: ignore[attr-defined]
    assert item["kind"] == kind and item["size"] == len(body)
    headers = sign_in(client, owner_email(home))
    content = client.get(f"/api/v1/items/{item['id']}/content", headers=headers)
    assert content.status_code == 200
    assert content.content == body
    assert content.headers["content-type"].startswith(content_type)


def test_a_large_clip_streams_in_and_out_in_pieces(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    clip = mp4_bytes(payload=1_500_000)
    pieces = (clip[i : i + 65_536] for i in range(0, len(clip), 65_536))
    token = device_token(home, container, "camera")
    r = upload(
        client,
        token,
        child(home),
        pieces,
        kind="video",
        content_type="video/mp4",
        captured_at=past(container),
    )
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    headers = sign_in(client, owner_email(home))
    got = client.get(f"/api/v1/items/{r.json()['id']}/content", headers=headers)  # type: ignore[attr-defined]
    assert got.content == clip


def test_transcript_and_thumbnail_are_items_linked_to_their_source(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    voice = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        wav_bytes(0.3),
        captured_at=past(container),
    ).json()  # type: ignore[attr-defined]
    r = client.post(
        "/api/v1/ingest/transcripts",
        json={"source_item_id": voice["id"], "text": "play the dinosaur song", "language": "en"},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["source_item_id"] == voice["id"] and r.json()["kind"] == "transcript"
    camera = device_token(home, container, "camera")
    clip = upload(
        client,
        camera,
        child(home),
        mp4_bytes(),
        kind="video",
        content_type="video/mp4",
        captured_at=past(container),
    ).json()  # type: ignore[attr-defined]
    thumb = upload(
        client,
        camera,
        child(home),
        jpeg_bytes(),
        kind="thumbnail",
        content_type="image/jpeg",
        captured_at=past(container),
        source_item_id=clip["id"],
    )
    assert thumb.status_code == 201, thumb.text  # type: ignore[attr-defined]
    headers = sign_in(client, owner_email(home))
    detail = client.get(f"/api/v1/items/{voice['id']}", headers=headers).json()
    assert detail["transcript"] == "play the dinosaur song"
    assert [d["kind"] for d in detail["derived"]] == ["transcript"]
    clip_detail = client.get(f"/api/v1/items/{clip['id']}", headers=headers).json()
    assert [d["id"] for d in clip_detail["derived"]] == [thumb.json()["id"]]  # type: ignore[attr-defined]


def test_a_location_batch_is_stored_whole(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    now = container.clock.now()
    points = [
        {
            "latitude": 48.85 + i / 1000,
            "longitude": 2.35,
            "captured_at": (now - timedelta(minutes=10 - i)).isoformat(),
        }
        for i in range(5)
    ]
    r = client.post(
        "/api/v1/ingest/locations",
        json={"profile_id": str(child(home)), "points": points},
        headers={"authorization": f"Bearer {device_token(home, container, 'phone')}"},
    )
    assert r.status_code == 201, r.text
    headers = sign_in(client, owner_email(home))
    got = client.get(f"/api/v1/items/{r.json()['id']}/content", headers=headers).json()
    assert [p["lat"] for p in got] == [p["latitude"] for p in points]


# --- refusals: a clear problem, nothing written -------------------------------------


def test_bad_token_is_refused(client: TestClient, container: Container, home: CreatedHome) -> None:
    before = stored(container)
    for token in ("tdv_not-a-real-token", "garbage", "tss_looks-like-a-session"):
        r = upload(client, token, child(home), wav_bytes(0.2), captured_at=past(container))
        assert_problem(r, 401, "invalid_device_token")
    r = client.post(
        "/api/v1/ingest/media",
        params={"profile_id": str(child(home)), "kind": "voice", "captured_at": past(container)},
        content=wav_bytes(0.2),
    )
    assert_problem(r, 401, "device_token_required")
    assert stored(container) == before


def test_revoked_device_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    token = device_token(home, container, "voice")
    assert (
        upload(client, token, child(home), wav_bytes(0.2), captured_at=past(container)).status_code
        == 201
    )  # type: ignore[attr-defined]
    device_id = next(d for d, t in home.device_tokens.items() if t == token)
    with container.stores.session() as s:
        households.revoke_device(
            s, household_id=home.household_id, device_id=device_id, now=container.clock.now()
        )
    before = stored(container)
    r = upload(client, token, child(home), wav_bytes(0.2), captured_at=past(container))
    assert_problem(r, 401, "invalid_device_token")
    assert stored(container) == before


def test_profile_of_another_household_is_refused(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    before = stored(container)
    r = upload(
        client,
        device_token(home, container, "voice"),
        other_home.child_profiles[0],
        wav_bytes(0.2),
        captured_at=past(container),
    )
    assert_problem(r, 404, "profile_not_found")
    assert stored(container) == before


@pytest.mark.parametrize(
    ("content_type", "body", "kind", "code", "status"),
    [
        ("audio/wav", jpeg_bytes(), "voice", "media_type_mismatch", 415),
        ("image/jpeg", wav_bytes(0.2), "snapshot", "media_type_mismatch", 415),
        (
            "audio/wav",
            b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(100),
            "voice",
            "media_type_mismatch",
            415,
        ),
        ("video/mp4", wav_bytes(0.2), "voice", "unsupported_media_type", 415),
        ("text/plain", b"hello", "voice", "unsupported_media_type", 415),
        ("audio/wav", b"", "voice", "empty_upload", 422),
        ("audio/wav", wav_bytes(0.2), "sticker", "invalid_item_kind", 422),
    ],
)
def test_content_that_is_not_what_it_claims_is_refused(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    content_type: str,
    body: bytes,
    kind: str,
    code: str,
    status: int,
) -> None:
    before = stored(container)
    device = "camera" if kind == "snapshot" else "voice"
    r = upload(
        client,
        device_token(home, container, device),
        child(home),
        body,
        kind=kind,
        content_type=content_type,
        captured_at=past(container),
    )
    assert_problem(r, status, code)
    assert stored(container) == before


def test_a_voice_device_cannot_upload_video(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    before = stored(container)
    r = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        mp4_bytes(),
        kind="video",
        content_type="video/mp4",
        captured_at=past(container),
    )
    assert_problem(r, 422, "kind_not_for_device")
    assert stored(container) == before


def test_an_oversized_upload_is_refused_by_its_declared_length(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    before = stored(container)
    big = wav_bytes(0.1) + bytes(container.settings.max_upload_bytes)
    r = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        big,
        captured_at=past(container),
    )
    assert_problem(r, 413, "payload_too_large")
    assert stored(container) == before


def test_an_oversized_stream_without_length_is_cut_off_and_removed(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    before = stored(container)
    limit = container.settings.max_upload_bytes

    def pieces() -> Iterator[bytes]:
        yield wav_bytes(0.1)
        for _ in range(limit // 65_536 + 2):
            yield bytes(65_536)

    r = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        pieces(),
        captured_at=past(container),
    )
    assert_problem(r, 413, "payload_too_large")
    assert stored(container) == before


def test_a_timestamp_far_in_the_future_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    before = stored(container)
    future = (container.clock.now() + timedelta(hours=2)).isoformat()
    r = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        wav_bytes(0.2),
        captured_at=future,
    )
    assert_problem(r, 422, "timestamp_in_future")
    naive = upload(
        client,
        device_token(home, container, "voice"),
        child(home),
        wav_bytes(0.2),
        captured_at="2026-01-01T10:00:00",
    )
    assert_problem(naive, 422, "invalid_input")
    assert stored(container) == before


@pytest.mark.parametrize(
    "bad_point",
    [
        {"latitude": 91.0, "longitude": 0.0},
        {"latitude": 10.0, "longitude": "east"},
        {"latitude": 10.0, "longitude": 0.0, "captured_at": "2030-01-01T00:00:00+00:00"},
        {"latitude": 10.0, "longitude": 0.0, "captured_at": "yesterday"},
        {"latitude": 10.0, "longitude": 0.0, "extra": "field"},
    ],
)
def test_a_malformed_location_batch_is_refused_whole(
    client: TestClient, container: Container, home: CreatedHome, bad_point: dict[str, object]
) -> None:
    before = stored(container)
    good = {"latitude": 1.0, "longitude": 2.0, "captured_at": past(container)}
    bad = {"captured_at": past(container), **bad_point}
    r = client.post(
        "/api/v1/ingest/locations",
        json={"profile_id": str(child(home)), "points": [good, good, bad, good]},
        headers={"authorization": f"Bearer {device_token(home, container, 'phone')}"},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] in {"invalid_input", "timestamp_in_future"}
    assert "east" not in r.text and "2030" not in r.text, "refusals must not echo the input"
    assert stored(container) == before


def test_a_transcript_for_another_households_recording_is_refused(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    theirs = upload(
        client,
        device_token(other_home, container, "voice"),
        other_home.child_profiles[0],
        wav_bytes(0.2),
        captured_at=past(container),
    ).json()  # type: ignore[attr-defined]
    before = stored(container)
    r = client.post(
        "/api/v1/ingest/transcripts",
        json={"source_item_id": theirs["id"], "text": "hello"},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )
    assert_problem(r, 404, "source_not_found")
    assert stored(container) == before


def test_oversized_json_bodies_are_refused_before_any_route_reads_them(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    limit = container.settings.max_json_bytes
    big = b'{"email": "' + b"a" * limit + b'", "password": "x"}'
    r = client.post("/api/v1/auth/token", content=big, headers={"content-type": "application/json"})
    assert_problem(r, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"profile_id": "' + str(child(home)).encode() + b'", "points": ['
        for _ in range(limit // 60_000 + 2):
            yield b'{"latitude": 1, "longitude": 2, "captured_at": "2026-01-01T00:00:00Z"},' * 1000
        yield b"]}"

    before = stored(container)
    r = client.post(
        "/api/v1/ingest/locations",
        content=chunks(),
        headers={
            "authorization": f"Bearer {device_token(home, container, 'phone')}",
            "content-type": "application/json",
        },
    )
    assert_problem(r, 413, "payload_too_large")
    assert stored(container) == before


def test_a_body_longer_than_its_declared_length_is_refused(
    container: Container, home: CreatedHome
) -> None:
    """A server that trusts Content-Length must not read past it (ASGI driven directly)."""
    from tutela.app import create_app

    app = create_app(container=container)
    before = stored(container)
    body = wav_bytes(0.5)
    query = f"profile_id={child(home)}&kind=voice&captured_at={past(container)}".replace("+", "%2B")
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    token = device_token(home, container, "voice")
    scope = media_upload_scope(query, token, content_length=b"100")
    run_apart(app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert start["status"] == 422
    assert b'"code":"length_mismatch"' in payload
    assert stored(container) == before


@pytest.mark.parametrize(
    ("kind", "content_type", "source", "code"),
    [
        ("thumbnail", "image/jpeg", False, "source_required"),
        ("snapshot", "image/jpeg", True, "source_not_allowed"),
    ],
)
def test_only_derived_artifacts_name_a_source(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    kind: str,
    content_type: str,
    source: bool,
    code: str,
) -> None:
    camera = device_token(home, container, "camera")
    clip = upload(
        client,
        camera,
        child(home),
        mp4_bytes(),
        kind="video",
        content_type="video/mp4",
        captured_at=past(container),
    )
    before = stored(container)
    extra = {"source_item_id": clip.json()["id"]} if source else {}  # type: ignore[attr-defined]
    r = upload(
        client,
        camera,
        child(home),
        jpeg_bytes(),
        kind=kind,
        content_type=content_type,
        captured_at=past(container),
        **extra,
    )
    assert_problem(r, 422, code)
    assert stored(container) == before
