"""The `tutela demo` command, checked the way a person trying the demo would check it."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.conftest import use_home
from tutela.app import create_app
from tutela.cli import app
from tutela.container import build
from tutela.demo import (
    DEMO_OWNER_EMAIL,
    DEMO_PASSWORD,
    DEMO_SECOND_PARENT_EMAIL,
    DEMO_SECOND_PARENT_TOTP_SECRET,
    DEMO_TOTP_SECRET,
)
from tutela.erasure import rawscan
from tutela.settings import Settings
from tutela.vault.models import MediaItem

runner = CliRunner()


def tutela(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def items_by_kind() -> dict[str, int]:
    container = build(Settings())
    try:
        with container.stores.session() as session:
            query = select(MediaItem.kind, func.count()).group_by(MediaItem.kind)
            rows = session.execute(query).all()
    finally:
        container.close()
    return dict(rows)


@pytest.fixture
def demo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "demo"
    use_home(monkeypatch, home)
    tutela("db", "upgrade")
    output = tutela("demo", "--households", "3", "--seed", "11")
    assert "3 homes created" in output
    assert DEMO_OWNER_EMAIL in output and DEMO_PASSWORD in output
    assert "support@demo.tutela.test" in output and "privacy@demo.tutela.test" in output
    assert "http://localhost:8000/staff/login" in output
    return home


@pytest.fixture
def client(demo_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def sign_in(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"email": email, "password": DEMO_PASSWORD})
    # The demo home has cameras: each parent, who sees them, has a published authenticator
    # key as its second factor (R5).
    secret = {
        DEMO_OWNER_EMAIL: DEMO_TOTP_SECRET,
        DEMO_SECOND_PARENT_EMAIL: DEMO_SECOND_PARENT_TOTP_SECRET,
    }[email]
    assert r.status_code == 202, r.text
    assert r.json()["factors"] == ["totp"]
    r = client.post(
        "/api/v1/auth/token/factor",
        json={"challenge": r.json()["challenge"], "code": pyotp.TOTP(secret).now()},
    )
    assert r.status_code == 201, r.text
    assert r.json()["stage"] == "full"
    return {"authorization": f"Bearer {r.json()['token']}"}


def age(birth: str) -> int:
    born, today = date.fromisoformat(birth), datetime.now(UTC).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def test_demo_parent_sees_two_children_with_recordings(client: TestClient) -> None:
    auth = sign_in(client, DEMO_OWNER_EMAIL)
    profiles = client.get("/api/v1/profiles", headers=auth).json()
    children = [p for p in profiles if p["kind"] == "child"]
    assert [p["kind"] for p in profiles].count("adult") == 1
    assert sorted(age(c["birth_date"]) for c in children) == [6, 11]

    for child in children:
        page = client.get(
            "/api/v1/items",
            params={"profile_id": child["id"], "kind": "voice"},
            headers=auth,
        ).json()
        assert page["items"], f"{child['name']} has no recordings"
        recording = page["items"][0]
        audio = client.get(f"/api/v1/items/{recording['id']}/content", headers=auth).content
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
        with wave.open(io.BytesIO(audio)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
            assert 1.5 <= wav.getnframes() / wav.getframerate() <= 4.0
        detail = client.get(f"/api/v1/items/{recording['id']}", headers=auth).json()
        assert detail["transcript"]
        assert datetime.fromisoformat(recording["captured_at"]) < datetime.now(UTC)

    snapshots = client.get("/api/v1/items", params={"kind": "snapshot"}, headers=auth).json()
    assert snapshots["items"]
    for snapshot in snapshots["items"]:
        picture = client.get(f"/api/v1/items/{snapshot['id']}/content", headers=auth).content
        with Image.open(io.BytesIO(picture)) as image:
            assert image.format == "JPEG"

    tracks = client.get("/api/v1/items", params={"kind": "location"}, headers=auth).json()
    assert tracks["items"]
    points = json.loads(
        client.get(f"/api/v1/items/{tracks['items'][0]['id']}/content", headers=auth).content
    )
    assert 10 <= len(points) <= 60


def test_second_parent_sees_the_same_children(client: TestClient) -> None:
    def children(email: str) -> set[str]:
        profiles = client.get("/api/v1/profiles", headers=sign_in(client, email)).json()
        return {p["id"] for p in profiles if p["kind"] == "child"}

    # One sign-in each: the owner's authenticator code is accepted only once (RFC 6238 §5.2).
    owners_children = children(DEMO_OWNER_EMAIL)
    assert len(owners_children) == 2
    assert children(DEMO_SECOND_PARENT_EMAIL) == owners_children


def test_if_empty_adds_nothing_the_second_time(demo_home: Path) -> None:
    before = items_by_kind()
    assert before["voice"] == before["transcript"] >= 18

    output = tutela("demo", "--households", "3", "--seed", "11", "--if-empty")

    assert "already there" in output and "homes created" not in output
    assert items_by_kind() == before


def test_the_same_seed_gives_the_same_population(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = items_by_kind()
    use_home(monkeypatch, tmp_path / "again")
    tutela("db", "upgrade")

    tutela("demo", "--households", "3", "--seed", "11")

    assert items_by_kind() == first


def test_demo_names_and_transcripts_are_nowhere_in_plaintext(
    client: TestClient, demo_home: Path
) -> None:
    """The demo's own children's names and transcripts are not in any file it wrote (R8, C2)."""
    auth = sign_in(client, DEMO_OWNER_EMAIL)
    children = [
        p for p in client.get("/api/v1/profiles", headers=auth).json() if p["kind"] == "child"
    ]
    voice = client.get(
        "/api/v1/items", params={"kind": "voice", "limit": "20"}, headers=auth
    ).json()
    transcripts = [
        client.get(f"/api/v1/items/{i['id']}", headers=auth).json()["transcript"]
        for i in voice["items"]
    ]
    needles = [c["name"].encode() for c in children] + [t.encode() for t in transcripts if t]
    assert len(needles) >= 5
    files = [p for p in demo_home.rglob("*") if p.is_file() and p.name != "master.key"]
    assert any(p.name == "tutela.db-wal" for p in files) or any(
        p.name == "tutela.db" for p in files
    )
    # Read by the raw scan's child process: the app in this process holds connections to
    # the database files, and closing a descriptor of its own on them would drop their locks.
    for path, hits in rawscan.scan(files, needles=needles, timeout=120).items():
        for n in hits.needles:
            pytest.fail(f"{needles[n].decode()!r} in plaintext in {path.name}")
