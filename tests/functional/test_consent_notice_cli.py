"""`tutela consent notice`, as an operator runs it to publish, or to make an earlier
version of the consent notice again from that version of the purposes file (C3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.unit.test_consent_notice import catalogue_v3
from tutela.cli import app
from tutela.consent.notice import render_html
from tutela.consent.purposes import load_purposes


@pytest.fixture(autouse=True)
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    return tmp_path


def test_the_notice_of_the_configured_file_is_what_the_site_publishes() -> None:
    result = CliRunner().invoke(app, ["consent", "notice"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_html(load_purposes())


def test_an_earlier_file_makes_its_own_version_of_the_notice_again(tmp_path: Path) -> None:
    old = tmp_path / "purposes-v3.toml"
    old.write_text(catalogue_v3(), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["consent", "notice", "--purposes", str(old), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["notice_version"] == 3
    assert "voice_match" in body["children_need_parental_consent_for"]
    assert body["source"] == "purposes-v3.toml"


def test_a_broken_file_is_refused_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "purposes.toml"
    bad.write_text(catalogue_v3().replace("separate = true", "separate = false"), encoding="utf-8")
    result = CliRunner().invoke(app, ["consent", "notice", "--purposes", str(bad)])
    assert result.exit_code == 2
    assert "asked for separately (C4)" in result.stderr
