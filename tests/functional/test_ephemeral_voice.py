"""Voice used only in place of typed words, through the HTTP API and the console (C11).

A device marks the upload `ephemeral=true`: it is checked like any other upload, then
dropped. No blob reaches the blob store (a local folder, or an S3 bucket), no item key is
made, and the row says so; playing it answers 410 `ephemeral_not_kept`; listings show
the mark; the console shows it as not kept, without a player. Bad combinations are
refused with a stable code and nothing stored.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import device_token, jpeg_bytes, make_home, mp4_bytes, past, wav_bytes
from tests.functional.conftest import (
    console_sign_in,
    owner_email,
    sign_in,
    stored,
    upload_voice,
)
from tests.functional.test_ingest_api import assert_problem, upload
from tutela.app import create_app
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.settings import Settings
from tutela.vault import rules
from tutela.vault.models import ItemKey, MediaItem


def _ephemeral(
    client: TestClient, container: Container, home: CreatedHome, audio: bytes, **headers: str
) -> str:
    r = client.post(
        "/api/v1/ingest/media",
        params={
            "profile_id": str(home.child_profiles[0]),
            "kind": "voice",
            "captured_at": past(container),
            "ephemeral": "true",
        },
        content=audio,
        headers={
            "authorization": f"Bearer {device_token(home, container, 'voice')}",
            "content-type": "audio/wav",
            **headers,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["ephemeral"] is True
    return str(r.json()["id"])


def _blob_files(container: Container) -> list[Path]:
    root = Path(container.settings.blob_path)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _row(container: Container, home: CreatedHome, item_id: str) -> MediaItem:
    with container.stores.session() as s:
        row = s.get(MediaItem, (home.household_id, uuid.UUID(item_id)))
        assert row is not None
        s.expunge(row)
        return row


def _transcribe(client: TestClient, container: Container, home: CreatedHome, item: str) -> str:
    r = client.post(
        "/api/v1/ingest/transcripts",
        json={"source_item_id": item, "text": "what does a stegosaurus eat", "language": "en"},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["ephemeral"] is True
    return str(r.json()["id"])


def test_the_audio_never_reaches_the_blob_store(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    audio = wav_bytes(1.0)
    item_id = _ephemeral(client, container, home, audio)
    after = stored(container)
    assert (after.items, after.keys, after.blobs) == (1, 0, 0)
    assert _blob_files(container) == []
    row = _row(container, home, item_id)
    assert row.ephemeral and row.blob_key is None and row.sealed_fields is None
    assert row.size == len(audio) and row.sealed_size == 0
    assert row.content_mac == b""  # no fingerprint of the voice is kept either
    assert not container.vault.blobs.exists(f"{home.household_id}/{row.profile_id}/{item_id}")
    # A recording kept as usual still is: sealed in the blob store under its own key.
    kept = upload_voice(client, container, home, body=wav_bytes(0.5))
    assert len(_blob_files(container)) == 1 and stored(container).keys == 1
    assert _row(container, home, kept).ephemeral is False


def test_a_streamed_ephemeral_upload_is_read_to_its_end_and_dropped(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """Past 1 MiB the body streams through the size and type checks: still nothing kept."""
    audio = wav_bytes(80.0)  # 1.28 MB at 8 kHz, 16 bits
    assert 1024 * 1024 < len(audio) < container.limits.max_upload_bytes
    item_id = _ephemeral(client, container, home, audio)
    assert _row(container, home, item_id).size == len(audio)
    assert _blob_files(container) == [] and stored(container).keys == 0


def test_playing_it_answers_a_clear_problem_and_the_transcript_still_reads(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    item_id = _ephemeral(client, container, home, wav_bytes(0.5))
    transcript_id = _transcribe(client, container, home, item_id)
    headers = sign_in(client, owner_email(home))
    played = client.get(f"/api/v1/items/{item_id}/content", headers=headers)
    assert_problem(played, 410, "ephemeral_not_kept")
    ranged = client.get(
        f"/api/v1/items/{item_id}/content", headers={**headers, "range": "bytes=0-99"}
    )
    assert_problem(ranged, 410, "ephemeral_not_kept")
    detail = client.get(f"/api/v1/items/{item_id}", headers=headers).json()
    assert detail["ephemeral"] is True
    assert detail["transcript"] == "what does a stegosaurus eat"
    assert [d["ephemeral"] for d in detail["derived"]] == [True]
    text = client.get(f"/api/v1/items/{transcript_id}/content", headers=headers)
    assert text.status_code == 200 and text.json()["text"] == "what does a stegosaurus eat"


def test_listings_mark_ephemeral_items_and_no_others(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    ephemeral = _ephemeral(client, container, home, wav_bytes(0.5))
    kept = upload_voice(client, container, home, body=wav_bytes(0.5))
    headers = sign_in(client, owner_email(home))
    listed = client.get("/api/v1/items", headers=headers).json()["items"]
    assert {i["id"]: i["ephemeral"] for i in listed} == {ephemeral: True, kept: False}


def test_an_ephemeral_item_is_never_trainable(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """The column is the mark the training gate reads (C11): never admitted, whoever's."""
    adult = next(iter(home.adult_profiles.values()))
    r = client.post(
        "/api/v1/ingest/media",
        params={
            "profile_id": str(adult),
            "kind": "voice",
            "captured_at": past(container),
            "ephemeral": "1",
        },
        content=wav_bytes(0.3),
        headers={
            "authorization": f"Bearer {device_token(home, container, 'voice')}",
            "content-type": "audio/wav",
        },
    )
    assert r.status_code == 201, r.text
    transcript = _transcribe(client, container, home, r.json()["id"])
    kept = upload_voice(client, container, home, body=wav_bytes(0.3), profile=adult)
    assert rules.trainable(_row(container, home, kept)) is True
    assert rules.trainable(_row(container, home, r.json()["id"])) is False
    assert rules.trainable(_row(container, home, transcript)) is False


@pytest.mark.parametrize(
    ("kind", "device", "content_type", "body"),
    [
        ("video", "camera", "video/mp4", mp4_bytes()),
        ("snapshot", "camera", "image/jpeg", jpeg_bytes()),
    ],
)
def test_only_voice_can_be_ephemeral(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    kind: str,
    device: str,
    content_type: str,
    body: bytes,
) -> None:
    before = stored(container)
    r = upload(
        client,
        device_token(home, container, device),
        home.child_profiles[0],
        body,
        kind=kind,
        content_type=content_type,
        captured_at=past(container),
        ephemeral="true",
    )
    assert_problem(r, 422, "ephemeral_voice_only")
    assert stored(container) == before


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("audio/wav", mp4_bytes(), 415, "media_type_mismatch"),
        ("video/mp4", mp4_bytes(), 415, "unsupported_media_type"),
        ("audio/wav", b"", 422, "empty_upload"),
        ("audio/wav", wav_bytes(140.0), 413, "payload_too_large"),
    ],
)
def test_an_ephemeral_upload_gets_the_usual_checks(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    before = stored(container)
    r = upload(
        client,
        device_token(home, container, "voice"),
        home.child_profiles[0],
        body,
        content_type=content_type,
        captured_at=past(container),
        ephemeral="true",
    )
    assert_problem(r, status, code)
    assert stored(container) == before


def test_an_ephemeral_upload_checks_the_device_and_the_profile(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    before = stored(container)
    token = device_token(home, container, "voice")
    foreign = upload(
        client,
        token,
        other_home.child_profiles[0],
        wav_bytes(0.3),
        captured_at=past(container),
        ephemeral="true",
    )
    assert_problem(foreign, 404, "profile_not_found")
    stranger = upload(
        client,
        "tdv_not-a-device",
        home.child_profiles[0],
        wav_bytes(0.3),
        captured_at=past(container),
        ephemeral="true",
    )
    assert stranger.status_code == 401  # type: ignore[attr-defined]
    assert stored(container) == before


def test_the_console_shows_it_as_not_kept_without_a_player(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    ephemeral = _ephemeral(client, container, home, wav_bytes(0.5))
    _transcribe(client, container, home, ephemeral)
    kept = upload_voice(client, container, home, body=wav_bytes(0.5))
    console_sign_in(client, owner_email(home))
    page = client.get(f"/profiles/{home.child_profiles[0]}")
    assert page.status_code == 200
    html = page.text
    start = html.index(f'data-item-id="{ephemeral}"')
    card = html[start : html.index("</li>", start)]
    assert "Used in place of typing, not kept." in card
    assert "deleted 24 hours after it arrives" in card
    assert "<audio" not in card and "/content" not in card
    assert "what does a stegosaurus eat" in card
    start = html.index(f'data-item-id="{kept}"')
    assert f'<audio controls preload="none" src="/api/v1/items/{kept}/content"' in html[start:]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_nothing_reaches_an_s3_bucket_either(
    settings: Settings, clock: FakeClock, s3_endpoint: str, unique: str
) -> None:
    bucket = f"tutela-eph-{unique}"
    s3_settings = Settings(
        **{
            **settings.model_dump(),
            "blob_store": "s3",
            "s3_endpoint_url": s3_endpoint,
            "s3_bucket": bucket,
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
    )
    container = build(s3_settings, clock=clock)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        home = make_home(container, tag=unique)
        with TestClient(create_app(container=container)) as client:
            item_id = _ephemeral(client, container, home, wav_bytes(1.0))
            row = _row(container, home, item_id)
            assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
            assert not container.vault.blobs.exists(
                f"{home.household_id}/{row.profile_id}/{item_id}"
            )
            upload_voice(client, container, home, body=wav_bytes(0.5))
            assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 1
        with container.stores.key_sessions() as k:
            assert uuid.UUID(item_id) not in set(k.scalars(select(ItemKey.item_id)))
    finally:
        from tests.conftest import _empty
        from tutela.db.base import Base, KeyBase

        _empty(container.stores.main, Base.metadata)
        _empty(container.stores.keys, KeyBase.metadata)
        container.close()
