"""What reaches logs and error responses: no personal data, no traces, no forged lines."""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.factories import wav_bytes
from tests.functional.conftest import console_sign_in, owner_email, sign_in, upload_voice
from tutela.app import create_app
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.logging import NoTraces


def test_request_log_names_the_route_not_the_ids(
    client: TestClient, container: Container, home: CreatedHome, caplog: pytest.LogCaptureFixture
) -> None:
    item = upload_voice(client, container, home, body=wav_bytes(0.2))
    headers = sign_in(client, owner_email(home))
    with caplog.at_level(logging.INFO, logger="tutela.http"):
        client.get(f"/api/v1/items/{item}", headers=headers)
        client.get("/nothing%0a2026-01-01 INFO tutela.http GET /forged 200")
    lines = [r.getMessage() for r in caplog.records if r.name == "tutela.http"]
    assert any("GET /api/v1/items/{item_id} 200" in line for line in lines)
    assert all(item not in line and "\n" not in line and "forged" not in line for line in lines)


class ExplodingBlobs:
    """A blob store whose reads fail with a message that must not leak."""

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        raise RuntimeError("Lily Marchetti's recording at 12 Elm Street")


def test_an_unexpected_error_is_a_plain_500_and_logs_only_its_type(
    container: Container, home: CreatedHome, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(container=container)
    with TestClient(app, raise_server_exceptions=False) as client:
        item = upload_voice(client, container, home, body=wav_bytes(0.2))
        headers = sign_in(client, owner_email(home))
        container.vault.blobs = ExplodingBlobs()  # type: ignore[assignment]
        with caplog.at_level(logging.INFO):
            r = client.get(f"/api/v1/items/{item}/content", headers=headers)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal_error"
    assert "Lily" not in r.text and "Traceback" not in r.text
    handler_filter = NoTraces()
    for record in caplog.records:
        handler_filter.filter(record)
        assert "Lily" not in record.getMessage() and "Elm" not in record.getMessage()
        assert record.exc_info is None
    assert any("RuntimeError" in record.getMessage() for record in caplog.records)


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    r = client.get(f"/api/v1/nothing/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.put("/api/v1/items")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert r.headers["content-type"] == "application/problem+json"


def test_personal_answers_are_never_cached_and_pages_are_locked_down(
    client: TestClient, home: CreatedHome
) -> None:
    headers = sign_in(client, owner_email(home))
    r = client.get("/api/v1/profiles", headers=headers)
    assert r.headers["cache-control"] == "no-store"
    page = client.get("/login")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "no-store" not in client.get("/static/console.css").headers.get("cache-control", "")


def test_behind_https_cookies_are_host_only_and_secure(
    container: Container, home: CreatedHome
) -> None:
    container.settings = container.settings.model_copy(update={"cookie_secure": True})
    with TestClient(create_app(container=container), base_url="https://tutela.test") as client:
        form = client.get("/login")
        assert "strict-transport-security" in form.headers
        csrf = form.cookies.get("__Host-tutela_csrf")
        assert csrf, form.headers.get("set-cookie")
        assert "secure" in form.headers["set-cookie"].lower()
        r = console_sign_in(client, owner_email(home), "correct horse battery staple")
        cookie = r.headers["set-cookie"]
        assert (
            cookie.startswith("__Host-tutela_session=")
            and "Secure" in cookie
            and "HttpOnly" in cookie
        )
        assert client.get("/").status_code == 200
