"""`tutela serve` as deployed: a real uvicorn process, and whose forwarded address counts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import use_home
from tests.factories import PASSWORD, make_home
from tests.mailbox import sign_in_served
from tutela.container import build
from tutela.db import migrate
from tutela.households.models import Account
from tutela.identity.models import SignInSession
from tutela.identity.owners import Owner
from tutela.identity.service import session_client
from tutela.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutela", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("tutela serve did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def served_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, str]:
    use_home(monkeypatch, tmp_path)
    # The factory home has a camera; its owner signs in with a password alone here (R5 off).
    monkeypatch.setenv("TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS", "false")
    settings = Settings()
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    home = make_home(container, tag="serve")
    container.close()
    return settings, next(iter(home.accounts))


def _signed_in_address(settings: Settings, base: str, email: str) -> str:
    r = sign_in_served(
        base, email, PASSWORD, settings.mail_path, headers={"x-forwarded-for": "198.51.100.23"}
    )
    assert r.status_code == 201, r.text
    container = build(settings)
    try:
        with container.stores.session() as s:
            row = s.scalars(select(SignInSession).order_by(SignInSession.created_at.desc())).first()
            assert row is not None
            account = s.get(Account, (row.household_id, row.account_id))
            assert account is not None
            owner = Owner.account(account.household_id, account.id, account.profile_id)
            return session_client(container.vault.keys, row, owner, now=row.created_at)["address"]
    finally:
        container.close()


@pytest.mark.parametrize(
    ("trusted", "expected"), [("[]", "127.0.0.1"), ('["127.0.0.1"]', "198.51.100.23")]
)
def test_forwarded_addresses_count_only_from_trusted_proxies(
    served_home: tuple[Settings, str], trusted: str, expected: str
) -> None:
    settings, email = served_home
    env = {**os.environ, "TUTELA_TRUSTED_PROXIES": trusted, "TUTELA_LOG_LEVEL": "WARNING"}
    with _serve(env) as base:
        assert _signed_in_address(settings, base, email) == expected


def test_the_embedded_worker_completes_an_erasure_with_a_verifiable_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded mode: the API process itself runs the job to completion (A8, S6), woken
    by the request rather than its poll, a minute here; it still stops promptly."""
    from tests.factories import seed_media
    from tutela.erasure import receipts

    use_home(monkeypatch, tmp_path)
    monkeypatch.setenv("TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS", "false")
    settings = Settings()
    migrate.upgrade(settings.main_url, settings.keys_url)
    container = build(settings)
    home = make_home(container, tag="embedded")
    voice = seed_media(container, home, voices=1, clips=0)["voice"][0]
    container.close()
    env = {**os.environ, "TUTELA_LOG_LEVEL": "WARNING", "TUTELA_EMBEDDED_WORKER_POLL_SECONDS": "60"}
    with _serve(env) as base:
        r = sign_in_served(base, next(iter(home.accounts)), PASSWORD, settings.mail_path)
        auth = {"authorization": f"Bearer {r.json()['token']}"}
        r = httpx.post(
            base + "/api/v1/erasures", json={"scope": "item", "item_id": str(voice)}, headers=auth
        )
        assert r.status_code == 202, r.text
        request_id = r.json()["id"]
        assert httpx.get(base + f"/api/v1/items/{voice}", headers=auth).status_code == 404
        for _ in range(150):
            state = httpx.get(base + f"/api/v1/erasures/{request_id}", headers=auth).json()
            if state["status"] == "completed":
                break
            time.sleep(0.1)
        assert state["status"] == "completed", state
        receipt = httpx.get(base + state["receipt_url"]).json()
        pem = httpx.get(base + "/api/v1/receipts/public-key").text
    body = receipts.verify(receipt, receipts.load_public_key(pem))
    assert body["request_id"] == request_id
    assert body["counts"] == {"voice": 1, "transcript": 1}
