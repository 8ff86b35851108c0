"""The operator's side of erasure on the command line: request, follow, show, verify the
receipt, and check a restored backup (A8, S8)."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import make_home, seed_media
from tutela.cli import app
from tutela.container import Container, build
from tutela.core.errors import KeyUnavailable
from tutela.households.service import CreatedHome
from tutela.settings import Settings

REQUESTED = re.compile(r"Erasure request ([0-9a-f-]{36}): pending, complete by \d{4}-\d{2}-\d{2}\.")


def _invoke(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def _seeded(container: Container, tag: str) -> tuple[CreatedHome, dict[str, list[uuid.UUID]]]:
    home = make_home(container, tag=tag)
    return home, seed_media(container, home)


def _erase_a_child_and_check_the_receipt(
    runner: CliRunner, home: CreatedHome, made: dict[str, list[uuid.UUID]], folder: Path
) -> uuid.UUID:
    """`erasure request` for a child's profile, then `list`, `show` and `receipt verify`."""
    child = home.child_profiles[0]
    out = _invoke(
        runner,
        *("erasure", "request", "--household", str(home.household_id)),
        *("--scope", "profile", "--profile", str(child)),
    )
    found = REQUESTED.search(out)
    assert found is not None, out
    request_id = found.group(1)
    assert "Now completed (step done)." in out

    listed = [
        line for line in _invoke(runner, "erasure", "list").splitlines() if request_id in line
    ]
    assert len(listed) == 1
    assert re.search(r"\bprofile\s+completed\s+step=done\b", listed[0]), listed[0]
    assert "by=privacy_officer" in listed[0]
    assert request_id not in _invoke(runner, "erasure", "list", "--open")

    shown = json.loads(_invoke(runner, "erasure", "show", request_id))
    assert (shown["id"], shown["status"], shown["scope"]) == (request_id, "completed", "profile")
    expected = {kind: len(ids) for kind, ids in made.items() if ids} | {"profiles": 1}
    assert shown["counts"] == expected
    receipt = shown["receipt"]
    assert receipt["receipt"]["counts"] == expected
    assert receipt["receipt"]["remnant_check"]["result"] == "clean"

    saved = folder / "receipt.json"
    saved.write_text(json.dumps(receipt))
    valid = _invoke(runner, "receipt", "verify", str(saved))
    assert f"Receipt valid: request {request_id}, scope profile" in valid
    receipt["receipt"]["counts"]["voice"] += 1
    tampered = folder / "tampered.json"
    tampered.write_text(json.dumps(receipt))
    assert "Receipt NOT valid" in _invoke(runner, "receipt", "verify", str(tampered), code=1)

    _invoke(runner, "erasure", "show", str(uuid.uuid4()), code=2)
    return uuid.UUID(request_id)


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on the test's stores (SQLite or PostgreSQL) and its master key file."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def test_an_operator_erases_a_childs_profile_and_verifies_its_receipt(
    runner: CliRunner, container: Container, tmp_path: Path
) -> None:
    home, made = _seeded(container, "cliflow")
    _erase_a_child_and_check_the_receipt(runner, home, made, tmp_path)

    out = _invoke(runner, "backup", "restore-check", "--dry-run")
    assert "Restored rows of erased subjects: 0 households, 0 profiles, 0 items." in out
    assert "Dry run: nothing erased." in out


def test_a_request_the_cli_cannot_make_is_refused_with_a_reason(
    runner: CliRunner, container: Container
) -> None:
    home = make_home(container, tag="clirefused")
    hh = str(home.household_id)
    no_profile = _invoke(
        runner, "erasure", "request", "--household", hh, "--scope", "profile", code=2
    )
    assert "error: This erasure names its profile." in no_profile
    adult = str(next(iter(home.adult_profiles.values())))
    has_account = _invoke(
        runner,
        *("erasure", "request", "--household", hh, "--scope", "profile", "--profile", adult),
        code=2,
    )
    assert "error: This profile signs in to an account" in has_account
    assert "Erasure request" not in _invoke(runner, "erasure", "list")


def test_an_operator_disgorges_items_across_homes_in_one_batch(
    runner: CliRunner, container: Container, tmp_path: Path
) -> None:
    """`erasure batch`: the recordings a model was trained on, across households, go in
    one batch job with one receipt (A8, C9); an unknown id is counted, a bad line refused."""
    homes = [_seeded(container, f"disgorge{n}") for n in range(2)]
    voices = [v for _, made in homes for v in made["voice"]]
    listing = tmp_path / "items.txt"
    listing.write_text("# recordings in the training set\n" + "\n".join(map(str, voices)))
    listing.write_text(listing.read_text() + f"\n{uuid.uuid4()}\n")

    out = _invoke(runner, "erasure", "batch", "--items", str(listing))

    assert f"1 batch requests for {len(voices)} items; 0 under a legal hold, 1 not found." in out
    assert "1 erasures completed." in out
    (line,) = [ln for ln in _invoke(runner, "erasure", "list").splitlines() if " batch " in ln]
    request_id = line.split()[0]
    shown = json.loads(_invoke(runner, "erasure", "show", request_id))
    assert shown["status"] == "completed"
    body = shown["receipt"]["receipt"]
    assert body["counts"] == {"voice": len(voices), "transcript": len(voices)}
    assert len(body["subjects"]) == 2
    keys = container.vault.keys
    for home, made in homes:
        for voice in made["voice"]:
            with pytest.raises(KeyUnavailable):
                keys.item_key(household_id=home.household_id, item_id=voice)
        assert keys.item_key(household_id=home.household_id, item_id=made["video"][0])

    bad = tmp_path / "bad.txt"
    bad.write_text("not-an-id\n")
    assert "error: line 1 is not an item id" in _invoke(
        runner, "erasure", "batch", "--items", str(bad), code=2
    )


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: what a nightly backup of the embedded store does."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_on_a_fresh_home_a_restored_backup_is_cleaned_by_restore_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded store from `tutela db upgrade` on. A backup of tutela.db taken before
    the erasure is put back after it; `backup restore-check` erases the child again."""
    home_dir = tmp_path / "home"
    use_home(monkeypatch, home_dir)
    runner = CliRunner()
    _invoke(runner, "db", "upgrade")
    database, backup = home_dir / "tutela.db", tmp_path / "tutela.db.backup"
    container = build(Settings())
    try:
        home, made = _seeded(container, "freshhome")
    finally:
        container.close()
    _sqlite_copy(database, backup)
    request_id = _erase_a_child_and_check_the_receipt(runner, home, made, tmp_path)

    _sqlite_copy(backup, database)
    out = _invoke(runner, "backup", "restore-check", "--dry-run")
    assert "Restored rows of erased subjects: 0 households, 1 profiles, 0 items." in out
    assert "Dry run: nothing erased." in out
    out = _invoke(runner, "backup", "restore-check")
    assert "1 erasure requests made, 1 completed." in out
    again = _invoke(runner, "backup", "restore-check", "--dry-run")
    assert "0 households, 0 profiles, 0 items." in again
    # The restored database forgot the first request; the second one is its record now.
    listed = _invoke(runner, "erasure", "list")
    assert str(request_id) not in listed
    assert len(re.findall(r"\bprofile\s+completed\s+step=done\s+by=restore_check\b", listed)) == 1


def test_a_process_running_only_the_engine_knows_every_table() -> None:
    """`tutela erasure` and `tutela worker` import the engine, not the web app: the
    household and profile sweeps and the remnant check must still see every table."""
    import subprocess
    import sys

    code = (
        "import tutela.erasure.engine\n"
        "from tutela.db.base import Base\n"
        "print(' '.join(sorted(Base.metadata.tables)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    for table in ("auto_delete_choices", "inactive_children", "consent_contacts", "outbox"):
        assert table in out
