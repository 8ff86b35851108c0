"""Key epochs as a parent and an operator see them: the API and the receipt claim the live
stores until the epoch is destroyed, and every copy after; `tutela keys epochs` and
`tutela keys rotate-epoch` (S6, A8)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import make_home, wav_bytes
from tests.functional.conftest import owner_email, sign_in, upload_voice
from tests.functional.test_erasure_api import erase, public_key
from tutela.app import create_app
from tutela.cli import app
from tutela.container import Container, build
from tutela.erasure import receipts
from tutela.households.service import CreatedHome
from tutela.settings import Settings

API = "/api/v1"


def test_the_api_and_the_receipt_never_claim_more_than_the_epoch_allows(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    item = upload_voice(client, container, home, body=wav_bytes(0.2))
    headers = sign_in(client, owner_email(home))
    answer = erase(client, headers, scope="item", item_id=item).json()
    container.erasure.run_pending()
    shown = client.get(f"{API}/erasures/{answer['id']}", headers=headers).json()
    assert shown["status"] == "completed"
    unreadable = shown["unreadable"]
    epoch = container.vault.keys.epochs()[-1]
    assert unreadable["every_copy_at"] is None
    by = epoch.started_at + container.vault.keys.window
    assert unreadable["every_copy_by"].replace("Z", "+00:00") == by.isoformat()
    assert unreadable["statement"] == (
        f"Unreadable in the live stores; every copy unreadable by {by:%Y-%m-%d %H:%M} UTC."
    )
    first = client.get(shown["receipt_url"]).json()
    body = receipts.verify(first, public_key(client))
    assert body["unreadable"]["every_copy_at"] is None

    assert container.rotate_key_epoch(force=True) is not None

    shown = client.get(f"{API}/erasures/{answer['id']}", headers=headers).json()
    destroyed = container.vault.keys.epoch(epoch.seq)
    assert destroyed is not None and destroyed.destroyed_at is not None
    assert shown["unreadable"]["statement"].startswith("Unreadable everywhere: every copy")
    again = client.get(shown["receipt_url"]).json()
    body = receipts.verify(again, public_key(client))
    assert body["unreadable"]["every_copy_at"] == destroyed.destroyed_at.isoformat()
    assert again["signature"]["value"] != first["signature"]["value"]
    # Everything else the receipt said stays as it was.
    assert {k: v for k, v in body.items() if k != "unreadable"} == {
        k: v for k, v in receipts.verify(first, public_key(client)).items() if k != "unreadable"
    }


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    monkeypatch.setenv("TUTELA_MFA_REQUIRED_FOR_CAMERA_VIEWERS", "false")
    return tmp_path


def test_rotate_epoch_from_the_command_line_keeps_every_recording_playable(
    home_dir: Path,
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    container = build(Settings())
    home = make_home(container, tag="epochs")
    with TestClient(create_app(container=container)) as client:
        audio = wav_bytes(0.3)
        item = upload_voice(client, container, home, body=audio)
        listed = runner.invoke(app, ["keys", "epochs"])
        assert listed.exit_code == 0, listed.output
        assert listed.output.split()[:2] == ["1", "current"]
        assert "every copy unreadable by" in listed.output

        not_due = runner.invoke(app, ["keys", "rotate-epoch"])
        assert not_due.exit_code == 0
        assert "not due" in not_due.output
        rotated = runner.invoke(app, ["keys", "rotate-epoch", "--force"])
        assert rotated.exit_code == 0, rotated.output
        assert "Key epoch 2 is current; destroyed 1;" in rotated.output

        listed = runner.invoke(app, ["keys", "epochs"]).output.splitlines()
        assert [line.split()[:2] for line in listed] == [["1", "destroyed"], ["2", "current"]]
        epochs_file = home_dir / "epochs.key"
        assert stat.S_IMODE(epochs_file.stat().st_mode) == 0o600
        assert len(json.loads(epochs_file.read_text())["epochs"]) == 1

        headers = sign_in(client, "ana.epochs@example.com")
        got = client.get(f"{API}/items/{item}/content", headers=headers)
        assert got.status_code == 200 and got.content == audio
    container.close()
