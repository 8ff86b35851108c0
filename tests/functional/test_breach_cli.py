"""`tutela breach` on a fresh home: seed the common list, import files, refuse bad ones (S5, R7)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import delete
from typer.testing import CliRunner

from tests.conftest import use_home
from tutela.cli import app as tutela_app
from tutela.container import build
from tutela.identity.breach_cli import app
from tutela.identity.breached import BreachChecker, SqlRangeStore, sha1_hex
from tutela.identity.models import BreachedRange
from tutela.settings import Settings


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    result = CliRunner().invoke(tutela_app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return tmp_path


def count(password: str) -> int:
    container = build(Settings())
    try:
        return BreachChecker(SqlRangeStore(container.stores.main_sessions)).count(password)
    finally:
        container.close()


def empty_breach_store() -> None:
    container = build(Settings())
    try:
        with container.stores.session() as session:
            session.execute(delete(BreachedRange))
            session.commit()
    finally:
        container.close()


def test_seed_default_loads_the_common_list_once(home_dir: Path) -> None:
    empty_breach_store()  # `db upgrade` may have seeded it already
    assert count("password") == 0
    runner = CliRunner()
    result = runner.invoke(app, ["seed-default"])
    assert result.exit_code == 0, result.output
    assert "19640 common passwords added" in result.stdout
    assert count("password") > 0
    assert count("qwerty123") > 0
    again = runner.invoke(app, ["seed-default"])
    assert again.exit_code == 0, again.output
    assert "nothing added" in again.stdout


def test_import_a_full_hash_file(home_dir: Path) -> None:
    first, second = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    file = home_dir / "hashes.txt"
    file.write_text(f"{sha1_hex(first)}:5\n\n{sha1_hex(second).lower()}\n{sha1_hex(first)}:2\n")
    result = CliRunner().invoke(app, ["import", str(file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "3 lines read, 2 stored, 1 skipped."
    assert (count(first), count(second)) == (5, 1)


def test_import_a_range_file_with_a_prefix(home_dir: Path) -> None:
    password = secrets.token_urlsafe(12)
    digest = sha1_hex(password)
    file = home_dir / "range.txt"
    file.write_text(f"{digest[5:]}:17\r\n")
    result = CliRunner().invoke(app, ["import", str(file), "--prefix", digest[:5]])
    assert result.exit_code == 0, result.output
    assert count(password) == 17


def test_a_bad_file_exits_2_with_a_message_and_stores_nothing(home_dir: Path) -> None:
    password = secrets.token_urlsafe(12)
    file = home_dir / "bad.txt"
    file.write_text(f"{sha1_hex(password)}:5\nhunter2\n")
    result = CliRunner().invoke(app, ["import", str(file)])
    assert result.exit_code == 2
    assert "bad.txt line 2" in result.stderr
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
    assert result.stdout == ""
    assert count(password) == 0


def test_a_missing_file_is_a_usage_error(home_dir: Path) -> None:
    result = CliRunner().invoke(app, ["import", str(home_dir / "absent.txt")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
