"""The ingestion gates: a device's upload is taken only when the consent ledger allows the
purpose it serves for the person it is about, asked before a byte is read (C3, C6).

Recordings, clips, snapshots, thumbnails and transcripts are kept under `storage`;
location batches under `precise_geolocation`. Every refusal is a 403 problem+json with a
stable code, and leaves no item row, no item key and no blob behind.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    device_token,
    grant_parental_consent,
    jpeg_bytes,
    make_home,
    mp4_bytes,
    past,
    wav_bytes,
)
from tests.functional.conftest import owner_email, sign_in, stored
from tests.functional.test_ingest_api import assert_problem, upload
from tests.functional.test_upload_edges import Upload, chunks_of, run_upload
from tutela.app import create_app
from tutela.consent.purposes import default_purposes_path
from tutela.container import Container, build
from tutela.core.clock import FakeClock, as_utc
from tutela.households.models import Profile
from tutela.households.service import CreatedHome
from tutela.settings import Settings

MEDIA = {
    "voice": ("voice", "audio/wav", wav_bytes(0.2)),
    "video": ("camera", "video/mp4", mp4_bytes()),
    "snapshot": ("camera", "image/jpeg", jpeg_bytes()),
    "thumbnail": ("camera", "image/jpeg", jpeg_bytes()),
}


def upload_kind(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    kind: str,
    profile: object,
    *,
    clip: str | None = None,
) -> object:
    """Upload one item of `kind` for `profile` from the device that takes it; a thumbnail
    names `clip`, or a clip uploaded for it first."""
    device, content_type, body = MEDIA[kind]
    extra = {}
    if kind == "thumbnail":
        extra["source_item_id"] = (
            clip or upload_kind(client, container, home, "video", profile).json()["id"]
        )  # type: ignore[attr-defined]
    return upload(
        client,
        device_token(home, container, device),
        profile,
        body,
        kind=kind,
        content_type=content_type,
        captured_at=past(container),
        **extra,
    )


def voice(client: TestClient, container: Container, home: CreatedHome, profile: object) -> object:
    return upload_kind(client, container, home, "voice", profile)


def transcript(client: TestClient, container: Container, home: CreatedHome, source: str) -> object:
    return client.post(
        "/api/v1/ingest/transcripts",
        json={"source_item_id": source, "text": "play the dinosaur song", "language": "en"},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )


def locations(
    client: TestClient, container: Container, home: CreatedHome, profile: object
) -> object:
    at = (container.clock.now() - timedelta(minutes=3)).isoformat()
    return client.post(
        "/api/v1/ingest/locations",
        json={
            "profile_id": str(profile),
            "points": [{"latitude": 51.5, "longitude": -0.12, "captured_at": at}],
        },
        headers={"authorization": f"Bearer {device_token(home, container, 'phone')}"},
    )


def device_state(
    client: TestClient, container: Container, home: CreatedHome, kind: str
) -> dict[str, dict[str, dict[str, object]]]:
    """`GET /api/v1/device` as the home's `kind` device: profile id → purpose → state."""
    r = client.get(
        "/api/v1/device",
        headers={"authorization": f"Bearer {device_token(home, container, kind)}"},
    )
    assert r.status_code == 200, r.text
    return {p["profile_id"]: {s["purpose"]: s for s in p["purposes"]} for p in r.json()["profiles"]}


def change(client: TestClient, home: CreatedHome, profile: object, **changes: bool) -> None:
    r = client.post(
        f"/api/v1/profiles/{profile}/consent",
        json={"notice_version": 1, "changes": changes},
        headers=sign_in(client, owner_email(home)),
    )
    assert r.status_code == 200, r.text


@pytest.fixture
def unconsented(container: Container, unique: str) -> CreatedHome:
    """A home whose child has no parental consent at all."""
    return make_home(container, tag=unique, parental_consent=False)


# -- a child before and after a parent's verified consent (C3) --


def test_a_childs_uploads_are_refused_until_a_parent_consents_then_taken(
    client: TestClient, container: Container, unconsented: CreatedHome
) -> None:
    home, child = unconsented, unconsented.child_profiles[0]
    before = stored(container)
    for kind in ("voice", "video", "snapshot"):
        assert_problem(
            upload_kind(client, container, home, kind, child), 403, "parental_consent_required"
        )
    r = locations(client, container, home, child)
    assert_problem(r, 403, "parental_consent_required")
    assert r.json()["purpose"] == "precise_geolocation"  # type: ignore[attr-defined]
    assert stored(container) == before

    state = device_state(client, container, home, "voice")[str(child)]["storage"]
    assert state["accepted"] is False
    assert state["code"] == "parental_consent_required"

    grant_parental_consent(container, home)
    r = voice(client, container, home, child)
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    assert transcript(client, container, home, r.json()["id"]).status_code == 201  # type: ignore[attr-defined]
    assert locations(client, container, home, child).status_code == 201  # type: ignore[attr-defined]
    state = device_state(client, container, home, "voice")[str(child)]["storage"]
    assert (state["accepted"], state["code"], state["detail"]) == (True, None, None)


@pytest.mark.parametrize("size", [200 * 1024, 1536 * 1024], ids=["small", "streamed"])
def test_a_refused_upload_reads_none_of_its_body(
    container: Container, unconsented: CreatedHome, size: int
) -> None:
    """The gate answers before the server takes in one byte: a child's device without
    consent cannot make Tutela hold even a megabyte of its recording for a moment."""
    before = stored(container)
    offered = Upload(chunks_of(b"\0" * size))
    run_upload(container, unconsented, offered, device_token(unconsented, container, "voice"))
    assert offered.status == 403
    assert offered.taken == 0
    assert stored(container) == before

    grant_parental_consent(container, unconsented)
    offered = Upload(chunks_of(wav_bytes(size / 16_000)))
    run_upload(container, unconsented, offered, device_token(unconsented, container, "voice"))
    assert offered.status == 201
    assert offered.taken == len(offered.chunks)


def test_a_grant_without_storage_still_refuses_recordings(
    client: TestClient, container: Container, unconsented: CreatedHome
) -> None:
    """A verified parental consent is not consent to every purpose: only what the parent
    granted on it is taken (C3)."""
    child = unconsented.child_profiles[0]
    grant_parental_consent(container, unconsented, purposes=("precise_geolocation",))
    assert_problem(voice(client, container, unconsented, child), 403, "parental_consent_required")
    assert locations(client, container, unconsented, child).status_code == 201  # type: ignore[attr-defined]


def test_a_refused_upload_does_not_keep_a_child_profile_active(
    client: TestClient, container: Container, clock: FakeClock, unconsented: CreatedHome
) -> None:
    """A1: a device that keeps knocking for a child nobody consented for does not hold
    the profile out of the inactive-child rule; an upload that is taken does."""
    child = unconsented.child_profiles[0]

    def last_active() -> object:
        with container.stores.session() as s:
            profile = s.get(Profile, (unconsented.household_id, child))
            assert profile is not None
            return as_utc(profile.last_active_at)

    joined = last_active()
    clock.advance(timedelta(days=3))
    assert_problem(voice(client, container, unconsented, child), 403, "parental_consent_required")
    assert last_active() == joined
    grant_parental_consent(container, unconsented)
    assert voice(client, container, unconsented, child).status_code == 201  # type: ignore[attr-defined]
    assert last_active() == clock.now()


# -- a parent refuses further collection (C6) --


def test_a_refused_child_is_refused_at_every_gate_and_the_device_shows_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    adult = home.adult_profiles[owner_email(home)]
    recording = voice(client, container, home, child).json()["id"]  # type: ignore[attr-defined]
    r = client.post(
        f"/api/v1/profiles/{child}/consent/refuse", headers=sign_in(client, owner_email(home))
    )
    assert r.status_code == 200, r.text

    before = stored(container)
    for kind in ("voice", "video", "snapshot"):
        assert_problem(upload_kind(client, container, home, kind, child), 403, "collection_refused")
    assert_problem(transcript(client, container, home, recording), 403, "collection_refused")
    r = locations(client, container, home, child)
    assert_problem(r, 403, "collection_refused")
    assert r.json()["detail"] == "A parent has stopped location sharing for this child."  # type: ignore[attr-defined]
    assert stored(container) == before

    for kind in ("voice", "camera"):
        state = device_state(client, container, home, kind)
        assert state[str(child)]["storage"]["accepted"] is False
        assert state[str(child)]["storage"]["code"] == "collection_refused"
        assert (
            state[str(child)]["storage"]["detail"]
            == "A parent has stopped recordings for this child."
        )
        assert state[str(adult)]["storage"]["accepted"] is True
    phone = device_state(client, container, home, "phone")[str(child)]
    assert {p: s["code"] for p, s in phone.items()} == {
        "storage": "collection_refused",
        "precise_geolocation": "collection_refused",
    }
    # The adult's own recordings go on.
    assert voice(client, container, home, adult).status_code == 201  # type: ignore[attr-defined]


def test_the_device_state_names_no_one_and_needs_a_device_token(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    r = client.get(
        "/api/v1/device",
        headers={"authorization": f"Bearer {device_token(home, container, 'phone')}"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "phone"
    assert {p["profile_id"] for p in body["profiles"]} == {
        str(p) for p in [*home.child_profiles, *home.adult_profiles.values()]
    }
    assert {p["kind"] for p in body["profiles"]} == {"adult", "child"}
    for word in ("Lily", "Marchetti", "Ana", "example.com"):
        assert word not in r.text
    purposes = body["profiles"][0]["purposes"]
    assert [(p["purpose"], p["kinds"]) for p in purposes] == [
        ("storage", ["voice", "video", "snapshot", "thumbnail", "transcript"]),
        ("precise_geolocation", ["location"]),
    ]
    voice_only = device_state(client, container, home, "voice")[str(home.child_profiles[0])]
    assert list(voice_only) == ["storage"]
    assert voice_only["storage"]["kinds"] == ["voice", "transcript"]

    assert_problem(client.get("/api/v1/device"), 401, "device_token_required")
    refused = client.get("/api/v1/device", headers={"authorization": "Bearer tdv_nobody"})
    assert_problem(refused, 401, "invalid_device_token")


# -- an adult's own consent --


def test_an_adult_who_withdrew_geolocation_keeps_recording_but_sends_no_locations(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    adult = home.adult_profiles[owner_email(home)]
    assert locations(client, container, home, adult).status_code == 201  # type: ignore[attr-defined]
    change(client, home, adult, precise_geolocation=False)

    before = stored(container)
    r = locations(client, container, home, adult)
    assert_problem(r, 403, "consent_withdrawn")
    assert r.json()["detail"] == "This person has turned off location sharing."  # type: ignore[attr-defined]
    assert stored(container) == before
    assert voice(client, container, home, adult).status_code == 201  # type: ignore[attr-defined]
    phone = device_state(client, container, home, "phone")[str(adult)]
    assert (phone["storage"]["accepted"], phone["precise_geolocation"]["code"]) == (
        True,
        "consent_withdrawn",
    )

    change(client, home, adult, precise_geolocation=True)
    assert locations(client, container, home, adult).status_code == 201  # type: ignore[attr-defined]


# -- each purpose at its own gates --


@pytest.mark.parametrize("kind", ["voice", "video", "snapshot", "thumbnail"])
def test_storage_is_asked_at_the_media_gate(
    client: TestClient, container: Container, home: CreatedHome, kind: str
) -> None:
    child = home.child_profiles[0]
    clip = upload_kind(client, container, home, "video", child).json()["id"]  # type: ignore[attr-defined]
    change(client, home, child, storage=False)
    before = stored(container)
    r = upload_kind(client, container, home, kind, child, clip=clip)
    assert_problem(r, 403, "collection_refused")
    assert r.json()["purpose"] == "storage"  # type: ignore[attr-defined]
    assert stored(container) == before
    # Locations are another purpose, still granted.
    assert locations(client, container, home, child).status_code == 201  # type: ignore[attr-defined]


def test_storage_is_asked_at_the_transcript_gate(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """A recording kept while storage was granted gets no transcript once it is withdrawn."""
    child = home.child_profiles[0]
    recording = voice(client, container, home, child).json()["id"]  # type: ignore[attr-defined]
    change(client, home, child, storage=False)
    before = stored(container)
    r = transcript(client, container, home, recording)
    assert_problem(r, 403, "collection_refused")
    assert r.json()["purpose"] == "storage"  # type: ignore[attr-defined]
    assert stored(container) == before


def test_precise_geolocation_is_asked_at_the_location_gate(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    change(client, home, child, precise_geolocation=False)
    before = stored(container)
    r = locations(client, container, home, child)
    assert_problem(r, 403, "collection_refused")
    assert r.json()["purpose"] == "precise_geolocation"  # type: ignore[attr-defined]
    assert stored(container) == before
    assert voice(client, container, home, child).status_code == 201  # type: ignore[attr-defined]


def test_a_grant_made_stale_by_a_notice_change_needs_fresh_consent(
    container: Container, settings: Settings, clock: FakeClock, home: CreatedHome, tmp_path: Path
) -> None:
    """C3: "again on any material change". The operator's notice 2 changes what keeping
    recordings means; the parent's grant under notice 1 no longer lets a recording in,
    and the device says why. Locations, unchanged, go on."""
    text = default_purposes_path().read_text(encoding="utf-8")
    text = text.replace("notice_version = 1", "notice_version = 2", 1)
    # The first purpose of the packaged file is `storage`.
    text = text.replace("changed_in = 1", "changed_in = 2", 1)
    changed = tmp_path / "purposes-v2.toml"
    changed.write_text(text, encoding="utf-8")
    restarted = build(settings.model_copy(update={"consent_purposes_file": changed}), clock=clock)
    try:
        with TestClient(create_app(container=restarted)) as client:
            child = home.child_profiles[0]
            before = stored(container)
            r = voice(client, container, home, child)
            assert_problem(r, 403, "fresh_consent_needed")
            assert "must agree to the new one" in r.json()["detail"]  # type: ignore[attr-defined]
            assert stored(container) == before
            state = device_state(client, container, home, "voice")[str(child)]["storage"]
            assert state["code"] == "fresh_consent_needed"
            assert locations(client, container, home, child).status_code == 201  # type: ignore[attr-defined]
    finally:
        restarted.close()
