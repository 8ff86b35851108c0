"""HTTP fixtures: the real app over the real stores, driven through Starlette's client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD, device_token, make_home
from tests.mailbox import emailed_link
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


def _consented(request: pytest.FixtureRequest) -> bool:
    """Homes' children get a verified parental consent (C3) unless the test is marked
    `without_parental_consent` (a test that gives it, or shows its absence)."""
    return request.node.get_closest_marker("without_parental_consent") is None


@pytest.fixture
def home(container: Container, unique: str, request: pytest.FixtureRequest) -> CreatedHome:
    return make_home(container, tag=unique, parental_consent=_consented(request))


@pytest.fixture
def other_home(container: Container, unique: str, request: pytest.FixtureRequest) -> CreatedHome:
    return make_home(
        container,
        tag=unique + "x",
        child_name="Otto Lindqvist",
        parental_consent=_consented(request),
    )


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


DEVICE_HEADER = "x-tutela-device"


def known_devices(client: TestClient) -> dict[str, str]:
    """The known-device tokens this test's client holds, by email (R6)."""
    state = client.app.state  # type: ignore[attr-defined]
    if not hasattr(state, "test_known_devices"):
        state.test_known_devices = {}
    devices: dict[str, str] = state.test_known_devices
    return devices


def sign_in(
    client: TestClient, email: str, password: str = PASSWORD, *, user_agent: str | None = None
) -> dict[str, str]:
    """Sign in as a customer would: from a device Tutela has not seen, the password is
    answered with an emailed link (R6), which is followed; the device is kept, so the
    next sign-in of `email` from this client is from a known device."""
    devices = known_devices(client)
    headers = {DEVICE_HEADER: devices[email]} if email in devices else {}
    if user_agent is not None:
        headers["user-agent"] = user_agent
    r = client.post(
        "/api/v1/auth/token", json={"email": email, "password": password}, headers=headers
    )
    if r.status_code == 202 and r.json()["status"] == "link_sent":
        container: Container = client.app.state.container  # type: ignore[attr-defined]
        token = emailed_link(container, email)
        r = client.post("/api/v1/auth/token/link", json={"token": token}, headers=headers)
    assert r.status_code == 201, r.text
    if r.json().get("device_token"):
        devices[email] = r.json()["device_token"]
    return {"authorization": f"Bearer {r.json()['token']}"}


def owner_email(home: CreatedHome) -> str:
    return next(iter(home.accounts))


def console_sign_in(client: TestClient, email: str, password: str = PASSWORD) -> httpx.Response:
    """Sign in through the console's form as a person would: the password, then, from a
    browser Tutela has not seen, the emailed link (R6). The client keeps the session and
    known-device cookies; the answer is the final redirect into the console."""
    form = client.get("/login")
    csrf = form.cookies.get("__Host-tutela_csrf") or client.cookies["tutela_csrf"]
    r = client.post(
        "/login",
        data={"email": email, "password": password, "csrf": csrf},
        follow_redirects=False,
    )
    if r.status_code == 202 and "Check your email" in r.text:
        container: Container = client.app.state.container  # type: ignore[attr-defined]
        r = client.post(
            "/login/link",
            data={"token": emailed_link(container, email)},
            follow_redirects=False,
        )
    assert r.status_code == 303, r.text
    return r
