"""`tutela consent purposes` and `tutela consent show`, as an operator runs them: the
state per purpose and the parental consents, with no personal data (C3, C4, C5)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import grant_parental_consent, make_home
from tutela.cli import app
from tutela.consent.asks import ask_parent
from tutela.container import Container
from tutela.identity.service import Principal

pytestmark = pytest.mark.without_parental_consent


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def _invoke(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_purposes_lists_each_with_disclosure_asked_on_its_own(runner: CliRunner) -> None:
    out = _invoke(runner, "consent", "purposes")
    assert out.startswith("notice version 1\n")
    [disclosure] = [line for line in out.splitlines() if "third_party_disclosure" in line]
    assert "off until granted" in disclosure and "asked for on its own (C4)" in disclosure
    assert "storage" in out and "on for adults" in out


def test_purposes_refuses_a_bad_file_with_exit_status_2(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "purposes.toml"
    bad.write_text("notice_version = 1\n[purpose.storage]\ntitle = 'x'\n", encoding="utf-8")
    result = runner.invoke(app, ["consent", "purposes", "--file", str(bad)])
    assert result.exit_code == 2
    assert "[purpose.third_party_disclosure] is required" in result.stderr


def test_show_gives_a_childs_state_parental_consents_and_asks_without_personal_data(
    runner: CliRunner, container: Container
) -> None:
    home = make_home(container, tag=uuid.uuid4().hex[:8], parental_consent=False)
    child = home.child_profiles[0]
    email, account = next(iter(home.accounts.items()))
    before = _invoke(runner, "consent", "show", "--profile", str(child))
    assert "storage" in before and "parental_consent_required" in before
    assert "parental consents: 0" in before

    consent_id = grant_parental_consent(container, home, purposes=("storage",))
    principal = Principal(
        household_id=home.household_id,
        account_id=account,
        profile_id=home.adult_profiles[email],
        role="owner",
        session_id=uuid.uuid4(),
    )
    with container.stores.session() as session:
        ask_parent(
            session,
            container.vault.keys,
            principal,
            child,
            email="grandparent@example.com",
            origin="http://localhost:8000",
            max_age=container.policy.consent_contact_max_age,
            asks_per_day=3,
            now=container.clock.now(),
        )
    out = _invoke(runner, "consent", "show", "--profile", str(child))
    assert "parental consents: 1" in out
    assert f"{consent_id}  signed_form" in out and "verified" in out
    assert "asks for consent: 1 open, 0 answered" in out
    [storage] = [line for line in out.splitlines() if line.strip().startswith("storage")]
    assert "granted" in storage and "not allowed" not in storage
    for personal in ("Lily", "Marchetti", "grandparent", email):
        assert personal not in out

    shown = json.loads(_invoke(runner, "consent", "show", "--profile", str(child), "--json"))
    assert shown["purposes"]["storage"]["allowed"] is True
    assert shown["parental_consents"][0]["method"] == "signed_form"
    assert shown["asks"] == {"open": 1, "answered": 0}


def test_show_refuses_an_unknown_profile(runner: CliRunner) -> None:
    result = runner.invoke(app, ["consent", "show", "--profile", str(uuid.uuid4())])
    assert result.exit_code == 2
    assert "no such profile" in result.stderr
