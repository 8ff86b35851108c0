"""HTTP fixtures: the real app over the real stores, driven through Starlette's client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD, device_token, make_home
from tutela.app import create_app
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.vault.models import ItemKey, MediaItem


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as test_client:
        yield test_client


@dataclass
class Snapshot:
    """What is stored: item rows, item keys and blob files. Equal snapshots: nothing written."""

    items: int
    keys: int
    blobs: int


def stored(container: Container) -> Snapshot:
    with container.stores.session() as s:
        items = s.scalar(select(func.count()).select_from(MediaItem)) or 0
    with container.stores.key_sessions() as k:
        keys = k.scalar(select(func.count()).select_from(ItemKey)) or 0
    root = Path(container.settings.blob_path)
    blobs = sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0
    return Snapshot(items=items, keys=keys, blobs=blobs)


@pytest.fixture
def home(container: Container, unique: str) -> CreatedHome:
    return make_home(container, tag=unique)


@pytest.fixture
def other_home(container: Container, unique: str) -> CreatedHome:
    return make_home(container, tag=unique + "x", child_name="Otto Lindqvist")


def upload_voice(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    *,
    body: bytes,
    profile: uuid.UUID | None = None,
    minutes_ago: int = 5,
) -> str:
    """Upload a WAV as the home's voice device; return the new item's id."""
    when = container.clock.now() - timedelta(minutes=minutes_ago)
    r = client.post(
        "/api/v1/ingest/media",
        params={
            "profile_id": str(profile or home.child_profiles[0]),
            "kind": "voice",
            "captured_at": when.isoformat(),
        },
        content=body,
        headers={
            "authorization": f"Bearer {device_token(home, container, 'voice')}",
            "content-type": "audio/wav",
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def sign_in(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def owner_email(home: CreatedHome) -> str:
    return next(iter(home.accounts))
