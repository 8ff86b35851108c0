"""Exports on the command line: `tutela worker` packages them, `tutela exports list` shows
them, `tutela exports expire` erases the expired ones through the engine (C6, A8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import make_home, seed_media
from tutela.cli import app
from tutela.container import Container
from tutela.erasure.models import ErasureRequest
from tutela.exports import service
from tutela.exports.models import Export


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on the test's stores (SQLite or PostgreSQL) and its master key file."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    monkeypatch.setenv("TUTELA_EMBEDDED_WORKER", "false")
    return CliRunner()


def _invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_worker_packages_an_export_and_expire_erases_it(
    runner: CliRunner, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique)
    seed_media(container, home, voices=2, clips=1)
    child = home.child_profiles[0]
    with container.stores.session() as s:
        export = service.request_export(
            s,
            household_id=home.household_id,
            account_id=next(iter(home.accounts.values())),
            profile_id=child,
            visible={child},
            now=datetime.now(UTC),
        )
        export_id = export.id
    assert "queued" in _invoke(runner, "exports", "list")

    _invoke(runner, "worker", "--once")
    listed = _invoke(runner, "exports", "list").splitlines()
    (line,) = [x for x in listed if str(export_id) in x]
    assert " ready " in line and "7/7 items" in line

    with container.stores.session() as s:
        s.execute(
            update(Export)
            .where(Export.id == export_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        s.commit()
    assert "1 expired packages erased" in _invoke(runner, "exports", "expire")
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, export_id))
        assert row is not None and row.state == "expired" and row.package_id is None
        request = s.get(ErasureRequest, row.erasure_request_id)
        assert request is not None and request.status == "completed"
    assert "expired" in _invoke(runner, "exports", "list")
