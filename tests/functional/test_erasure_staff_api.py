"""A privacy officer over the HTTP API: open and failed requests of every household, a
retry once the fault is fixed, and a failed household closure asked for again (A8, C10,
C7, S7, S8). Failures come from real faults: a blob store refusing deletes, a blob copy
that keeps coming back for the remnant check to find."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import PASSWORD, make_home, seed_media
from tests.faults import ComingBack, refuse_deletes, run_until_failed
from tests.functional.conftest import owner_email, sign_in
from tests.functional.test_erasure_api import API, erase, public_key, stepped_up
from tests.functional.test_sign_in_api import (
    add_security_key,
    assertion,
    authenticator,
    second_factor,
    signed_in,
)
from tests.functional.test_sign_in_api import sign_in as sign_in_as
from tests.functional.test_staff import NEW_PASSWORD, change_password, staff_add
from tests.softauthn import SoftAuthenticator
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.erasure import receipts


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI, pointed at the stores and the key file of `container`."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def officer(
    client: TestClient, container: Container, runner: CliRunner, email: str
) -> tuple[dict[str, str], SoftAuthenticator]:
    """A privacy officer signed in with a security key (R4): the sign-in's second factor
    counts as a step-up for a few minutes."""
    initial = staff_add(runner, email, "privacy_officer")
    enrolling = signed_in(sign_in_as(client, email, initial, staff=True), "enrol")
    key = authenticator(container)
    add_security_key(client, key, enrolling)
    change_password(client, enrolling, initial)
    started = sign_in_as(client, email, NEW_PASSWORD, staff=True)
    headers = signed_in(
        second_factor(client, started.json()["challenge"], webauthn=assertion(key, started))
    )
    return headers, key


def step_up(client: TestClient, headers: dict[str, str], key: SoftAuthenticator) -> None:
    options = client.post(f"{API}/auth/step-up/options", headers=headers)
    assert options.status_code == 200, options.text
    proof = key.get(json.dumps(options.json()["options"]))
    confirmed = client.post(
        f"{API}/auth/step-up",
        json={"webauthn": proof, "ceremony": options.json()["ceremony"]},
        headers=headers,
    )
    assert confirmed.status_code == 204, confirmed.text


def listed(client: TestClient, headers: dict[str, str], **params: str) -> dict[str, Any]:
    r = client.get(f"{API}/staff/erasures", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return {e["id"]: e for e in r.json()}


def problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code


def test_an_officer_finds_a_failed_request_and_retries_it_to_a_verified_receipt(
    client: TestClient, container: Container, clock: FakeClock, runner: CliRunner, unique: str
) -> None:
    home = make_home(container, tag=unique)
    made = seed_media(container, home, clips=0)
    parent = sign_in(client, owner_email(home))
    r = erase(client, parent, scope="item", item_id=str(made["voice"][0]))
    assert r.status_code == 202, r.text
    answer = r.json()
    request_id = answer["id"]
    blobs = refuse_deletes(container)
    run_until_failed(container, clock, uuid.UUID(request_id))
    mine = client.get(f"{API}/erasures/{request_id}", headers=sign_in(client, owner_email(home)))
    assert mine.json()["status"] == "failed"

    headers, key = officer(client, container, runner, f"pia.{unique}@operator.example")
    open_now = listed(client, headers)
    assert open_now[request_id]["status"] == "failed"
    assert open_now[request_id]["step"] == "blobs"
    assert open_now[request_id]["last_error"] == "PermissionError"
    assert open_now[request_id]["household_id"] == str(home.household_id)
    assert request_id in listed(client, headers, status="failed")
    assert request_id not in listed(client, headers, status="completed")
    customer = client.get(f"{API}/staff/erasures", headers=parent)
    problem(customer, 401, "staff_session_required")

    retry = f"{API}/staff/erasures/{request_id}/retry"
    problem(
        client.post(f"{API}/staff/erasures/{uuid.uuid4()}/retry", headers=headers),
        404,
        "erasure_not_found",
    )
    clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    problem(client.post(retry, headers=headers), 403, "step_up_required")
    assert listed(client, headers)[request_id]["status"] == "failed"

    step_up(client, headers, key)
    blobs.broken = False
    retried = client.post(retry, headers=headers)
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["step"]) == ("pending", "blobs")
    assert retried.json()["complete_by"] == answer["complete_by"]

    assert container.erasure.run_pending().completed == 1
    document = client.get(f"{API}/receipts/{request_id}")
    assert document.status_code == 200
    body = receipts.verify(document.content, public_key(client))
    assert body["counts"] == {"voice": 1, "transcript": 1}
    assert request_id not in listed(client, headers)
    problem(client.post(retry, headers=headers), 409, "erasure_not_retryable")


def test_a_failed_household_closure_is_requested_again_by_an_officer_and_completes(
    client: TestClient, container: Container, clock: FakeClock, runner: CliRunner, unique: str
) -> None:
    home = make_home(container, tag=unique)
    seed_media(container, home)
    blob_key = next(iter(container.vault.blobs.keys(f"{home.household_id}/")))
    replica = ComingBack(container, blob_key)
    container.erasure.after_step = replica
    closed = erase(client, stepped_up(client, owner_email(home)), scope="household")
    assert closed.status_code == 202, closed.text
    first = closed.json()
    run_until_failed(container, clock, uuid.UUID(first["id"]))
    gone = client.post(f"{API}/auth/token", json={"email": owner_email(home), "password": PASSWORD})
    assert gone.status_code == 401  # the accounts went before the check failed

    headers, _ = officer(client, container, runner, f"pia.{unique}@operator.example")
    assert listed(client, headers, status="failed")[first["id"]]["household_id"] is None
    replica.stopped = True
    again = client.post(
        f"{API}/staff/erasures",
        json={"scope": "household", "household_id": str(home.household_id)},
        headers=headers,
    )
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first["id"]
    assert again.json()["complete_by"] == first["complete_by"]

    assert container.erasure.run_pending().completed == 1
    document = client.get(f"{API}/receipts/{first['id']}")
    assert document.status_code == 200
    assert receipts.verify(document.content, public_key(client))["scope"]["kind"] == "household"
    assert list(container.vault.blobs.keys(f"{home.household_id}/")) == []
