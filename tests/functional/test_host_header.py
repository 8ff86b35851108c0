"""A forged `Host` header steers no redirect and, with the host check, is refused.

OWASP Web Security Testing Guide, "Testing for Host Header Injection".
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tutela.app import create_app
from tutela.container import Container
from tutela.hosts import answered_hosts, host_name, relative_location


@pytest.mark.parametrize("path", ["/api/v1/items/", "/api/v1/profiles/", "/healthz/"])
def test_a_trailing_slash_redirect_never_names_the_requested_host(
    client: TestClient, path: str
) -> None:
    r = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code in {307, 308}
    location = r.headers["location"]
    assert "evil.example" not in location
    assert location == path.rstrip("/")


def test_the_relative_redirect_still_takes_the_browser_to_the_page(client: TestClient) -> None:
    r = client.get("/healthz/")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.fixture
def checked(container: Container) -> TestClient:
    settings = container.settings.model_copy(
        update={
            "host_check": True,
            "public_url": "https://tutela.example.org",
            "allowed_hosts": ["tutela.lan"],
        }
    )
    return TestClient(create_app(settings, container=container))


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
        "tutela.example.org",
        "TUTELA.example.org:443",
        "tutela.lan",
    ],
)
def test_the_host_check_answers_the_names_tutela_is_served_under(
    checked: TestClient, host: str
) -> None:
    r = checked.get("/healthz", headers={"host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "host", ["evil.example", "tutela.example.org.evil.example", "evil.example:80", ""]
)
def test_the_host_check_refuses_any_other_host_before_routing(
    checked: TestClient, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tutela.http"):
        r = checked.get("/api/v1/items/", headers={"host": host}, follow_redirects=False)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_host"
    assert "location" not in r.headers
    assert any("(no route) 400" in rec.getMessage() for rec in caplog.records)


def test_the_host_check_is_on_in_production_unless_turned_off(container: Container) -> None:
    settings = container.settings
    assert not settings.checks_host  # test and development: the test client, LAN names
    assert settings.model_copy(update={"environment": "production"}).checks_host
    off = settings.model_copy(update={"environment": "production", "host_check": False})
    assert not off.checks_host


def test_host_names_and_locations() -> None:
    assert host_name("Example.ORG:8443") == "example.org"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("::1") == "::1"
    assert answered_hosts("http://localhost:8000", []) == {"localhost", "127.0.0.1", "::1"}
    headers = [(b"location", b"http://evil.example//other.example/x?a=1#f"), (b"x", b"y")]
    assert relative_location(headers, "evil.example") == [
        (b"location", b"/other.example/x?a=1#f"),
        (b"x", b"y"),
    ]
    # A redirect to another site on purpose (not built from the request) is left alone.
    elsewhere = [(b"location", b"https://help.example.org/")]
    assert relative_location(elsewhere, "tutela.example.org") == elsewhere
