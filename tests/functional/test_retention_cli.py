"""`tutela retention check` and `tutela retention notice`, as an operator runs them (A7, C9)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.unit.test_retention_policy import HEAD, all_rules, hold, rule
from tutela.retention.cli import app
from tutela.retention.policy import default_policy_path


@pytest.fixture(autouse=True)
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_the_packaged_policy() -> None:
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "policy OK: 12 rules, 0 legal holds (0 active)" in result.stdout
    digest = hashlib.sha256(default_policy_path().read_bytes()).hexdigest()
    assert digest in result.stdout


def test_check_lists_every_problem_with_its_line_and_exits_2(tmp_path: Path) -> None:
    text = HEAD + all_rules(skip={("voice", "child")}) + rule("voice", "child", max_age_days="0")
    text += rule("voice", "child")
    path = write(tmp_path / "policy.toml", text)
    lines = text.splitlines()
    zero = lines.index("max_age_days = 0") + 1
    second = len(lines) - 5
    assert lines[second - 1] == "[[rule]]"

    result = CliRunner().invoke(app, ["check", "--policy", str(path)])

    assert result.exit_code == 2
    assert result.stdout == ""
    reported = result.stderr.splitlines()
    assert f"policy.toml:{zero}: max_age_days must be at least 1 day, not 0" in reported
    assert any(line.startswith(f"policy.toml:{second}: a second rule") for line in reported)
    assert any(line.startswith(f"policy.toml:{zero - 5}: the rule for kind") for line in reported)


def test_check_reports_a_toml_syntax_error_by_line(tmp_path: Path) -> None:
    path = write(tmp_path / "policy.toml", "version = 1\n\n[inactive_child\n")
    result = CliRunner().invoke(app, ["check", "--policy", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("policy.toml:3: not valid TOML")


def test_check_reads_the_configured_policy_and_counts_active_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = HEAD + all_rules()
    text += hold(id='"open"', expires="2999-01-01")
    text += hold(id='"closed"', household=f'"{uuid.uuid4()}"', expires="2001-01-01")
    path = write(tmp_path / "operator.toml", text)
    monkeypatch.setenv("TUTELA_RETENTION_POLICY_FILE", str(path))
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "policy OK: 12 rules, 2 legal holds (1 active)" in result.stdout


def test_a_missing_policy_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", "--policy", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "cannot read the policy" in result.stderr


def test_notice_prints_markdown_by_default() -> None:
    result = CliRunner().invoke(app, ["notice"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Retention notice\n")
    assert hashlib.sha256(default_policy_path().read_bytes()).hexdigest() in result.stdout


def test_notice_writes_an_html_file_from_the_given_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ours.toml",
        HEAD
        + all_rules(skip={("location", "child")})
        + rule("location", "child", max_age_days="3"),
    )
    out = tmp_path / "notice.html"
    result = CliRunner().invoke(
        app, ["notice", "--format", "html", "--policy", str(path), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"Notice written to {out}" in result.stdout
    document = out.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>")
    assert digest in document
    assert "Purpose of location for child." in document
    assert "<td>3 days</td>" in document


def test_notice_states_the_configured_erasure_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUTELA_ERASURE_COMPLETION_DAYS", "21")
    result = CliRunner().invoke(app, ["notice"])
    assert result.exit_code == 0, result.output
    assert "within 21 days of receiving it" in result.stdout


def test_notice_refuses_a_broken_policy(tmp_path: Path) -> None:
    path = write(tmp_path / "policy.toml", HEAD)
    out = tmp_path / "notice.md"
    result = CliRunner().invoke(app, ["notice", "--policy", str(path), "--output", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("policy.toml:1: no rule for kind")
    assert not out.exists()


def test_explain_prints_the_selections_plans_on_the_configured_store() -> None:
    from tutela.db import migrate
    from tutela.settings import Settings

    settings = Settings()
    migrate.upgrade(settings.main_url, settings.keys_url)
    result = CliRunner().invoke(app, ["explain"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "rule_page:\n    SEARCH items USING INDEX ix_items_retention (kind=?" in out
    assert "ix_items_household_profile_captured" in out
    assert "SCAN items" not in out
