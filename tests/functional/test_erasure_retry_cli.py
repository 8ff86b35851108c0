"""A failed erasure on the command line: `erasure list --open` shows it (with its error
and its deadline warning), `erasure retry` runs it to a receipt that verifies, and a
request that is not failed is refused (A8, S7, S8)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import make_home, seed_media
from tests.faults import refuse_deletes, run_until_failed, status
from tutela.cli import app
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope


def _invoke(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def _line(output: str, request_id: uuid.UUID) -> str:
    lines = [line for line in output.splitlines() if str(request_id) in line]
    assert len(lines) <= 1, output
    return lines[0] if lines else ""


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on the test's stores (SQLite or PostgreSQL), key file and blob folder."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def test_an_operator_sees_a_failed_request_as_open_and_retries_it_to_a_valid_receipt(
    runner: CliRunner, container: Container, clock: FakeClock, tmp_path: Path
) -> None:
    home = make_home(container, tag="cliretry")
    child = home.child_profiles[0]
    made = seed_media(container, home)
    row = container.erasure.request(
        Scope(ScopeKind.PROFILE, home.household_id, profile_id=child),
        Requester(RequesterKind.GUARDIAN, "account:test"),
    )
    # The worker's blob store refuses deletes: the request fails at `blobs`.
    refuse_deletes(container)
    run_until_failed(container, clock, row.id)

    listed = _line(_invoke(runner, "erasure", "list", "--open"), row.id)
    assert re.search(r"\bprofile\s+failed\s+step=blobs\b", listed), listed
    assert "error=PermissionError" in listed and "WARNING" not in listed
    clock.set(status(container, row.id).warn_at)
    assert container.erasure.check_deadlines() == 1
    warned = _line(_invoke(runner, "erasure", "list", "--open"), row.id)
    assert "WARNING: past 80% of its limit" in warned

    # The CLI's own blob store deletes: the fault is not there.
    out = _invoke(runner, "erasure", "retry", str(row.id))
    assert f"Erasure request {row.id} queued again from step blobs" in out
    assert "Now completed (step done)." in out
    assert _line(_invoke(runner, "erasure", "list", "--open"), row.id) == ""

    shown = json.loads(_invoke(runner, "erasure", "show", str(row.id)))
    assert (shown["status"], shown["last_error"]) == ("completed", None)
    expected = {kind: len(ids) for kind, ids in made.items() if ids} | {"profiles": 1}
    assert shown["receipt"]["receipt"]["counts"] == expected
    saved = tmp_path / "receipt.json"
    saved.write_text(json.dumps(shown["receipt"]))
    assert f"Receipt valid: request {row.id}" in _invoke(runner, "receipt", "verify", str(saved))

    again = _invoke(runner, "erasure", "retry", str(row.id), code=2)
    assert "error: This erasure request is completed" in again
    unknown = _invoke(runner, "erasure", "retry", str(uuid.uuid4()), code=2)
    assert "error: No such erasure request." in unknown
