"""A household owner registers and revokes devices; tokens are shown once (R6, R8)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import make_home, wav_bytes
from tests.functional.conftest import owner_email, sign_in
from tutela.container import Container
from tutela.households.service import CreatedHome


def _upload(client: TestClient, container: Container, token: str, profile: object) -> int:
    r = client.post(
        "/api/v1/ingest/media",
        params={
            "profile_id": str(profile),
            "kind": "voice",
            "captured_at": container.clock.now().isoformat(),
        },
        content=wav_bytes(0.2),
        headers={"authorization": f"Bearer {token}", "content-type": "audio/wav"},
    )
    return r.status_code


def test_owner_registers_a_camera_whose_token_works_once_shown(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    r = client.post(
        "/api/v1/devices",
        json={"kind": "camera", "label": "Garden camera", "zone": "garden"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token.startswith("tdv_") and r.json()["device"]["zone"] == "garden"
    listed = client.get("/api/v1/devices", headers=headers).json()
    assert "token" not in str(listed) and token not in str(listed)
    assert _upload(client, container, token, home.child_profiles[0]) == 201


def test_revoked_device_cannot_upload_and_shows_as_revoked(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    token = next(iter(home.device_tokens.values()))
    device_id = next(iter(home.device_tokens))
    assert client.delete(f"/api/v1/devices/{device_id}", headers=headers).status_code == 204
    assert (
        client.delete(f"/api/v1/devices/{device_id}", headers=headers).status_code == 204
    )  # idempotent
    assert _upload(client, container, token, home.child_profiles[0]) == 401
    listed = {d["id"]: d for d in client.get("/api/v1/devices", headers=headers).json()}
    assert listed[str(device_id)]["revoked"] is True


def test_only_the_owner_manages_devices(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    member = list(home.accounts)[1]
    headers = sign_in(client, member)
    r = client.post(
        "/api/v1/devices", json={"kind": "voice", "label": "Hall speaker"}, headers=headers
    )
    assert r.status_code == 403 and r.json()["code"] == "owner_only"
    r = client.delete(f"/api/v1/devices/{next(iter(home.device_tokens))}", headers=headers)
    assert r.status_code == 403


def test_another_households_device_answers_404(
    client: TestClient, home: CreatedHome, other_home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    r = client.delete(f"/api/v1/devices/{next(iter(other_home.device_tokens))}", headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "device_not_found"


def test_bad_device_descriptions_are_refused(client: TestClient, home: CreatedHome) -> None:
    headers = sign_in(client, owner_email(home))
    for body, code in [
        ({"kind": "camera", "label": "Somewhere"}, "camera_zone_required"),
        ({"kind": "camera", "label": "Attic", "zone": "attic"}, "invalid_camera_zone"),
        ({"kind": "voice", "label": "Hall", "zone": "hallway"}, "zone_not_allowed"),
        ({"kind": "voice", "label": "  "}, "invalid_label"),
        ({"kind": "voice", "label": "x", "token": "tdv_mine"}, "invalid_input"),
    ]:
        r = client.post("/api/v1/devices", json=body, headers=headers)
        assert r.status_code == 422, body
        assert r.json()["code"] == code
    assert len(client.get("/api/v1/devices", headers=headers).json()) == 3
