"""The public staff-access notice is served from the policy file, each version published
once and kept as published; changing the file changes the notice (R9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tutela.app import create_app
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.settings import Settings
from tutela.transparency.policy import default_staff_access_path

API = "/api/v1"
DEFAULT = default_staff_access_path().read_text(encoding="utf-8")


def test_the_notice_is_public_html_and_json_from_the_packaged_policy(client: TestClient) -> None:
    page = client.get("/notices/staff-access")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "Trust &amp; Safety reviewer" in page.text
    assert '<meta name="notice-version" content="1">' in page.text
    data = client.get(f"{API}/notices/staff-access").json()
    assert data["version"] == 1 and data["operator"] == "Tutela Home"
    assert data["access_records_kept_days"] == 730
    assert {r["id"] for r in data["roles"]} >= {"reviewer", "support", "privacy_officer"}
    consented = next(p for p in data["purposes"] if p["id"] == "consented_review")
    assert consented["requires"] == ["human_review_consent"]
    versions = client.get(f"{API}/notices/staff-access/versions").json()
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["url"] == "/notices/staff-access/versions/1"
    assert client.get("/notices/staff-access/versions/1").text == page.text
    missing = client.get(f"{API}/notices/staff-access/versions/7")
    assert missing.status_code == 404 and missing.json()["code"] == "notice_version_not_found"


@pytest.fixture
def reconfigure() -> Iterator[list[Container]]:
    """Containers over the same stores with another policy file, as after a restart."""
    made: list[Container] = []
    yield made
    for container in made:
        container.close()


def restarted(
    settings: Settings, clock: FakeClock, path: Path, text: str, made: list[Container]
) -> TestClient:
    path.write_text(text, encoding="utf-8")
    container = build(settings.model_copy(update={"staff_access_policy_file": path}), clock=clock)
    made.append(container)
    return TestClient(create_app(container=container))


def test_a_new_version_of_the_policy_publishes_a_new_notice_and_keeps_the_old(
    client: TestClient,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    reconfigure: list[Container],
) -> None:
    first = client.get("/notices/staff-access").text
    text = DEFAULT.replace("version = 1", "version = 2", 1).replace(
        "access_records_kept_days = 730", "access_records_kept_days = 365", 1
    )
    with restarted(settings, clock, tmp_path / "staff.toml", text, reconfigure) as second:
        now = second.get("/notices/staff-access").text
        assert now != first
        assert "1 year (365 days)" in now and '<meta name="notice-version" content="2">' in now
        assert second.get(f"{API}/notices/staff-access").json()["access_records_kept_days"] == 365
        versions = second.get(f"{API}/notices/staff-access/versions").json()
        assert [v["version"] for v in versions] == [2, 1]
        # Version 1 stays as it was published.
        assert second.get("/notices/staff-access/versions/1").text == first
        assert second.get(f"{API}/notices/staff-access/versions/1").json()["version"] == 1


def test_a_changed_policy_under_a_published_version_number_is_refused(
    client: TestClient,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    reconfigure: list[Container],
) -> None:
    first = client.get("/notices/staff-access").text
    text = DEFAULT.replace("access_records_kept_days = 730", "access_records_kept_days = 3650", 1)
    with restarted(settings, clock, tmp_path / "staff.toml", text, reconfigure) as second:
        r = second.get(f"{API}/notices/staff-access")
        assert r.status_code == 500 and r.json()["code"] == "staff_access_version_reused"
        assert "3650" not in r.text
        # What was published under version 1 is still what version 1 says.
        assert second.get("/notices/staff-access/versions/1").text == first


def test_an_older_version_than_the_published_one_is_refused(
    client: TestClient,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    reconfigure: list[Container],
) -> None:
    newer = DEFAULT.replace("version = 1", "version = 3", 1).replace(
        'operator = "Tutela Home"', 'operator = "Acme Homes"', 1
    )
    with restarted(settings, clock, tmp_path / "v3.toml", newer, reconfigure) as third:
        assert third.get(f"{API}/notices/staff-access").json()["version"] == 3
    older = DEFAULT.replace("version = 1", "version = 2", 1)
    with restarted(settings, clock, tmp_path / "v2.toml", older, reconfigure) as second:
        r = second.get("/notices/staff-access")
        assert r.status_code == 500 and r.json()["code"] == "staff_access_version_behind"
        assert [
            v["version"] for v in second.get(f"{API}/notices/staff-access/versions").json()
        ] == [3]


def test_the_command_line_checks_a_policy_before_it_is_deployed(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tutela.cli import app

    runner = CliRunner()
    good = runner.invoke(app, ["staff-access", "check"])
    assert good.exit_code == 0 and "policy OK: version 1, 6 roles" in good.output
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT.replace('requires = ["human_review_consent"]', "requires = []"))
    refused = runner.invoke(app, ["staff-access", "check", "--policy", str(bad)])
    assert refused.exit_code == 2
    assert "requires must include human_review_consent" in refused.output
    printed = runner.invoke(app, ["staff-access", "notice", "--format", "html"])
    assert printed.exit_code == 0 and "Trust &amp; Safety reviewer" in printed.output
