"""No plaintext personal data at rest: database files, WAL, key store and blobs (R8, C2, S6).

A demo-like home is written through the API; then the raw bytes of every file Tutela
keeps (and, on PostgreSQL, a dump of the main database) are searched for the child's
name, the child's birth date, a transcript's words, the parent's email, the audio, the
sign-in's user agent, an authenticator app's seed and an employee's email.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.factories import PASSWORD, device_token, wav_bytes
from tests.functional.conftest import owner_email, sign_in, upload_voice
from tutela.container import Container
from tutela.erasure import rawscan
from tutela.households.service import CreatedHome
from tutela.identity.staff import add_staff

TRANSCRIPT = "remind me to pick up Zephyrine from violin practice"
SECRETS = [b"Lily Marchetti", b"Marchetti", b"2019-03-14", b"Zephyrine", b"violin practice"]


def _write_everything(client: TestClient, container: Container, home: CreatedHome) -> bytes:
    audio = wav_bytes(0.5, pitch=523.0)
    item_id = upload_voice(client, container, home, body=audio)
    t = client.post(
        "/api/v1/ingest/transcripts",
        json={"source_item_id": item_id, "text": TRANSCRIPT},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )
    assert t.status_code == 201
    # The data is really there and readable through Tutela; the sign-in's user agent and
    # address are personal data too.
    headers = sign_in(client, owner_email(home), user_agent="Mozilla/5.0 (Zephyrine-iPad)")
    assert (
        client.get(f"/api/v1/items/{item_id}", headers=headers).json()["transcript"] == TRANSCRIPT
    )
    names = [p["name"] for p in client.get("/api/v1/profiles", headers=headers).json()]
    assert "Lily Marchetti" in names
    return audio[44:4000]  # a run of raw PCM samples


def _add_secrets_of_sign_in(
    client: TestClient, container: Container, home: CreatedHome
) -> list[bytes]:
    """An authenticator app's seed, an employee's email, and queued notices (R5, R4, R6)."""
    headers = sign_in(client, owner_email(home))
    assert (
        client.post(
            "/api/v1/auth/step-up", json={"password": PASSWORD}, headers=headers
        ).status_code
        == 204
    )
    begun = client.post("/api/v1/factors/totp", json={"label": "Phone"}, headers=headers).json()
    confirmed = client.post(
        f"/api/v1/factors/totp/{begun['factor_id']}/confirm",
        json={"code": pyotp.TOTP(begun["secret"]).at(container.clock.now())},
        headers=headers,
    )
    assert confirmed.status_code == 200
    with container.stores.session() as session:
        add_staff(
            session,
            container.vault.keys,
            container.hasher,
            email="rosa.quintavalle@operator.example",
            roles=["reviewer"],
            now=container.clock.now(),
        )
    seed = begun["secret"].encode()
    return [seed, base64.b32decode(seed), b"rosa.quintavalle", b"quintavalle@operator"]


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_nothing_personal_is_stored_in_plaintext(
    client: TestClient, container: Container, home: CreatedHome, backend: str, tmp_path: Path
) -> None:
    pcm = _write_everything(client, container, home)
    needles = [
        *SECRETS,
        owner_email(home).encode(),
        pcm,
        *_add_secrets_of_sign_in(client, container, home),
    ]
    files = _files(container.settings.blob_path)
    assert files, "blobs were written"
    for url in (container.settings.main_url, container.settings.keys_url):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            db = Path(str(parsed.database))
            files += [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    if backend == "postgresql":
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            pytest.skip("pg_dump is not installed")
        for url in (container.settings.main_url, container.settings.keys_url):
            out = tmp_path / f"{make_url(url).database}.sql"
            plain = make_url(url).set(drivername="postgresql").render_as_string(False)
            subprocess.run([pg_dump, "--data-only", "-f", str(out), plain], check=True)
            files.append(out)
        assert any(b"COPY public.items" in f.read_bytes() for f in files if f.suffix == ".sql")
    else:
        assert any(f.name.endswith("-wal") or f.name == "tutela.db" for f in files)
    # Read by the raw scan's child process: the container in this process holds
    # connections to the database files, and closing a descriptor of its own on them
    # would drop their locks.
    for path, hits in rawscan.scan(files, needles=needles, timeout=120).items():
        for n in hits.needles:
            pytest.fail(f"{needles[n][:20]!r} found in plaintext in {path.name}")
