"""Sign-in never runs unthrottled: with its Redis gone it answers 503 (R6)."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email
from tutela.app import create_app
from tutela.container import build
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.settings import Settings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sign_in_answers_503_without_its_throttle_store(
    settings: Settings, clock: FakeClock, home: CreatedHome
) -> None:
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    container = build(broken, clock=clock)
    try:
        with TestClient(create_app(container=container)) as client:
            answer = client.post(
                "/api/v1/auth/token", json={"email": owner_email(home), "password": PASSWORD}
            )
    finally:
        container.close()
    assert answer.status_code == 503
    assert answer.json()["code"] == "service_unavailable"
    assert "token" not in answer.json()
