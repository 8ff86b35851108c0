"""The consent ledger through the API: a person's own consent, a guardian's for a child,
the rules that refuse a wrong grant, the step-up a grant that widens use needs, and a
ledger the store will not let be rewritten (C3, C4, C6, C7)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from tests.factories import PASSWORD, grant_parental_consent, make_home
from tests.functional.conftest import owner_email, sign_in
from tutela.consent.models import ConsentEvent
from tutela.container import Container
from tutela.households.service import CreatedHome


def stepped_up(client: TestClient, email: str) -> dict[str, str]:
    """A session that confirmed it is its holder a moment ago (C7)."""
    headers = sign_in(client, email)
    r = client.post("/api/v1/auth/step-up", json={"password": PASSWORD}, headers=headers)
    assert r.status_code == 204, r.text
    return headers


def _state(body: dict[str, object]) -> dict[str, tuple[bool, str]]:
    purposes = body["purposes"]
    assert isinstance(purposes, list)
    return {p["purpose"]: (p["allowed"], p["reason"]) for p in purposes}


def test_the_purposes_and_notice_version_are_public(client: TestClient) -> None:
    r = client.get("/api/v1/consent/purposes")
    assert r.status_code == 200
    names = {p["name"] for p in r.json()["purposes"]}
    assert {"storage", "human_review", "model_training", "precise_geolocation"} <= names
    assert r.json()["notice_version"] == 1


def test_an_adult_starts_with_review_training_and_disclosure_off(
    client: TestClient, home: CreatedHome
) -> None:
    """C4: defaults are off for review, training and disclosure."""
    auth = sign_in(client, owner_email(home))
    own = home.adult_profiles[owner_email(home)]
    state = _state(client.get(f"/api/v1/profiles/{own}/consent", headers=auth).json())
    assert state["storage"] == (True, "default_on")
    assert state["human_review"] == (False, "not_granted")
    assert state["model_training"] == (False, "not_granted")
    assert state["third_party_disclosure"] == (False, "not_granted")


def test_an_adult_grants_and_withdraws_and_the_history_keeps_both(
    client: TestClient, home: CreatedHome
) -> None:
    auth = stepped_up(client, owner_email(home))
    own = home.adult_profiles[owner_email(home)]
    url = f"/api/v1/profiles/{own}/consent"
    r = client.post(
        url, json={"notice_version": 1, "changes": {"model_training": True}}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert _state(r.json())["model_training"] == (True, "granted")
    r = client.post(
        url, json={"notice_version": 1, "changes": {"model_training": False}}, headers=auth
    )
    assert _state(r.json())["model_training"] == (False, "withdrawn")
    history = client.get(url + "/history", headers=auth).json()
    assert [(e["purpose"], e["granted"], e["by_you"]) for e in history] == [
        ("model_training", False, True),
        ("model_training", True, True),
    ]
    assert {e["channel"] for e in history} == {"api"}


def test_disclosure_is_never_bundled_and_a_stale_notice_is_refused(
    client: TestClient, home: CreatedHome
) -> None:
    """C4: consent to third-party disclosure is asked for on its own. C3: a grant given
    under a notice the person was not shown is refused."""
    auth = stepped_up(client, owner_email(home))
    url = f"/api/v1/profiles/{home.adult_profiles[owner_email(home)]}/consent"
    bundled = {"third_party_disclosure": True, "model_training": True}
    r = client.post(url, json={"notice_version": 1, "changes": bundled}, headers=auth)
    assert r.status_code == 422
    assert r.json()["code"] == "consent_bundled"
    r = client.post(
        url, json={"notice_version": 7, "changes": {"human_review": True}}, headers=auth
    )
    assert r.status_code == 409
    assert r.json()["code"] == "notice_changed"
    r = client.post(url, json={"notice_version": 1, "changes": {"astrology": True}}, headers=auth)
    assert r.status_code == 422
    assert r.json()["code"] == "unknown_purpose"
    assert client.get(url + "/history", headers=auth).json() == []


def test_turning_on_training_needs_a_fresh_step_up_and_withdrawing_does_not(
    client: TestClient, container: Container, unique: str
) -> None:
    """C7: a session alone cannot turn on a use that is off by default (here training,
    for a child whose parent's consent is verified): nothing is recorded until its holder
    confirms it is them. Withdrawing, and keeping recordings, only narrow or keep today's
    use and need no step-up."""
    home = make_home(container, tag=unique, parental_consent=False)
    grant_parental_consent(container, home, purposes=())
    auth = sign_in(client, owner_email(home))
    url = f"/api/v1/profiles/{home.child_profiles[0]}/consent"
    r = client.post(
        url, json={"notice_version": 1, "changes": {"model_training": True}}, headers=auth
    )
    assert r.status_code == 403
    assert r.json()["code"] == "step_up_required"
    assert r.json()["step_up_url"] == "/api/v1/auth/step-up"
    assert client.get(url + "/history", headers=auth).json() == []
    assert _state(client.get(url, headers=auth).json())["model_training"][0] is False

    r = client.post(url, json={"notice_version": 1, "changes": {"storage": True}}, headers=auth)
    assert r.status_code == 200, r.text
    assert _state(r.json())["storage"] == (True, "granted")
    r = client.post(
        url, json={"notice_version": 1, "changes": {"model_training": False}}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert _state(r.json())["model_training"] == (False, "withdrawn")

    auth = stepped_up(client, owner_email(home))
    r = client.post(
        url, json={"notice_version": 1, "changes": {"model_training": True}}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert _state(r.json())["model_training"] == (True, "granted")
    history = client.get(url + "/history", headers=auth).json()
    assert [(e["purpose"], e["granted"]) for e in history] == [
        ("model_training", True),
        ("model_training", False),
        ("storage", True),
    ]


def test_a_guardian_cannot_consent_for_a_child_before_verification(
    client: TestClient, container: Container, unique: str
) -> None:
    """C3: verifiable parental consent comes before any grant for a child."""
    home = make_home(container, tag=unique, parental_consent=False)
    auth = sign_in(client, owner_email(home))
    url = f"/api/v1/profiles/{home.child_profiles[0]}/consent"
    state = _state(client.get(url, headers=auth).json())
    assert state["storage"] == (False, "parental_consent_required")
    r = client.post(url, json={"notice_version": 1, "changes": {"storage": True}}, headers=auth)
    assert r.status_code == 403
    assert r.json()["code"] == "parental_consent_required"
    grant_parental_consent(container, home, purposes=())
    r = client.post(url, json={"notice_version": 1, "changes": {"storage": True}}, headers=auth)
    assert r.status_code == 200
    assert _state(r.json())["storage"] == (True, "granted")


def test_refusing_collection_withdraws_every_purpose(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C6: a parent can refuse further collection or use."""
    grant_parental_consent(container, home)
    auth = sign_in(client, owner_email(home))
    url = f"/api/v1/profiles/{home.child_profiles[0]}/consent"
    assert _state(client.get(url, headers=auth).json())["storage"] == (True, "granted")
    r = client.post(url + "/refuse", headers=auth)
    assert r.status_code == 200
    assert all(allowed is False for allowed, _ in _state(r.json()).values())
    assert _state(r.json())["storage"] == (False, "withdrawn")


def test_another_households_profile_is_not_found(
    client: TestClient, home: CreatedHome, other_home: CreatedHome
) -> None:
    auth = sign_in(client, owner_email(home))
    for pid in (other_home.child_profiles[0], next(iter(other_home.adult_profiles.values()))):
        url = f"/api/v1/profiles/{pid}/consent"
        assert client.get(url, headers=auth).status_code == 404
        r = client.post(
            url, json={"notice_version": 1, "changes": {"storage": False}}, headers=auth
        )
        assert r.status_code == 404
        assert client.post(url + "/refuse", headers=auth).status_code == 404


def test_the_store_refuses_to_rewrite_a_consent_event(
    client: TestClient, container: Container, unique: str
) -> None:
    """The ledger is appended to, never updated: a grant cannot be turned into a
    withdrawal (or back) behind the ledger's back, on either store."""
    home = make_home(container, tag=unique, parental_consent=False)
    grant_parental_consent(container, home)
    with container.stores.session() as session:
        with pytest.raises(DBAPIError):
            session.execute(update(ConsentEvent).values(granted=False))
        session.rollback()
        granted = session.execute(
            text("select count(*) from consent_events where granted")
        ).scalar()
    assert granted == 2
