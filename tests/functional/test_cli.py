"""The `tutela` command line on a fresh home: migrate, rotate the master key, run a worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import make_home, wav_bytes
from tests.functional.conftest import sign_in, upload_voice
from tutela.app import create_app
from tutela.cli import app
from tutela.container import build
from tutela.settings import Settings


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    # These homes have cameras; a password alone signs their owners in here (R5 is off).
    monkeypatch.setenv("TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS", "false")
    return tmp_path


def test_db_upgrade_makes_both_stores_and_check_agrees(home_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (home_dir / "tutela.db").exists() and (home_dir / "keys.db").exists()
    result = runner.invoke(app, ["db", "check"])
    assert result.exit_code == 0, result.output
    assert "agree" in result.output


def test_rotate_master_then_a_recording_still_plays(home_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    container = build(Settings())
    home = make_home(container, tag="cli")
    with TestClient(create_app(container=container)) as client:
        audio = wav_bytes(0.4)
        item_id = upload_voice(client, container, home, body=audio)
        key_file_before = (home_dir / "master.key").read_text()
        result = runner.invoke(app, ["keys", "rotate-master"])
        assert result.exit_code == 0, result.output
        assert "1 old master key(s) retired" in result.output
        assert (home_dir / "master.key").read_text() != key_file_before
        headers = sign_in(client, "ana.cli@example.com")
        got = client.get(f"/api/v1/items/{item_id}/content", headers=headers)
        assert got.status_code == 200
        assert got.content == audio
    container.close()


def test_worker_runs_a_pass_and_stops(home_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tutela", "worker", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "worker stopped" in proc.stderr
