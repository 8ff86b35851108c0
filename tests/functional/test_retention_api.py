"""Retention over HTTP: a profile's retention, automatic deletion and keeping an inactive
child's profile (A3, A6, C9), through `create_app` and the real stores."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi.testclient import TestClient

from tests.factories import make_home
from tests.functional.conftest import owner_email, sign_in
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.retention.sweep import run_sweep


def _kind(body: dict[str, object], kind: str) -> dict[str, object]:
    kinds = body["kinds"]
    assert isinstance(kinds, list)
    return next(k for k in kinds if k["kind"] == kind)


def test_a_guardian_reads_a_childs_retention(client: TestClient, home: CreatedHome) -> None:
    auth = sign_in(client, owner_email(home))
    r = client.get(f"/api/v1/profiles/{home.child_profiles[0]}/retention", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["profile_kind"] == "child"
    assert body["choices_offered"] == ["3m", "18m"]
    assert body["inactive_child"] is None
    assert len(body["kinds"]) == 6
    assert _kind(body, "voice") == {
        "kind": "voice",
        "policy_max_age_days": 30,
        "choice": None,
        "effective_max_age_days": 30,
        "decided_by": "policy",
    }


def test_an_adult_sets_automatic_deletion_for_their_own_recordings(
    client: TestClient, home: CreatedHome
) -> None:
    auth = sign_in(client, owner_email(home))
    me = home.adult_profiles[owner_email(home)]
    r = client.put(
        f"/api/v1/profiles/{me}/auto-delete", json={"kind": "voice", "choice": "3m"}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert _kind(r.json(), "voice") == {
        "kind": "voice",
        "policy_max_age_days": 730,
        "choice": "3m",
        "effective_max_age_days": 90,
        "decided_by": "choice",
    }
    # "never" keeps recordings until the policy's maximum age, not beyond it (A6, A7).
    r = client.put(
        f"/api/v1/profiles/{me}/auto-delete",
        json={"kind": "voice", "choice": "never"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert _kind(r.json(), "voice")["effective_max_age_days"] == 730
    assert (
        client.get(f"/api/v1/profiles/{me}/retention", headers=auth).json()["kinds"]
        == r.json()["kinds"]
    )


def test_a_childs_recordings_cannot_be_kept_forever(client: TestClient, home: CreatedHome) -> None:
    auth = sign_in(client, owner_email(home))
    child = home.child_profiles[0]
    r = client.put(
        f"/api/v1/profiles/{child}/auto-delete",
        json={"kind": "video", "choice": "never"},
        headers=auth,
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "child_never_not_allowed"
    r = client.put(
        f"/api/v1/profiles/{child}/auto-delete",
        json={"kind": "video", "choice": "1y"},
        headers=auth,
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_auto_delete"
    r = client.put(
        f"/api/v1/profiles/{child}/auto-delete",
        json={"kind": "video", "choice": "18m"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    # 18 months chosen; the policy keeps a child's video 90 days, and that wins (C9).
    assert _kind(r.json(), "video")["effective_max_age_days"] == 90


def test_another_households_profile_is_not_found(
    client: TestClient, home: CreatedHome, other_home: CreatedHome
) -> None:
    auth = sign_in(client, owner_email(home))
    theirs = other_home.child_profiles[0]
    assert client.get(f"/api/v1/profiles/{theirs}/retention", headers=auth).status_code == 404
    r = client.put(
        f"/api/v1/profiles/{theirs}/auto-delete",
        json={"kind": "voice", "choice": "3m"},
        headers=auth,
    )
    assert r.status_code == 404
    assert client.post(f"/api/v1/profiles/{theirs}/keep", headers=auth).status_code == 404


def test_another_adults_profile_is_not_theirs_to_set(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique + "two", second_adult=True)
    owner = sign_in(client, owner_email(home))
    bruno_email = next(e for e in home.accounts if e.startswith("bruno."))
    bruno = home.adult_profiles[bruno_email]
    r = client.put(
        f"/api/v1/profiles/{bruno}/auto-delete",
        json={"kind": "voice", "choice": "3m"},
        headers=owner,
    )
    assert r.status_code == 404
    # Bruno, an adult of the home but not the child's guardian, cannot see or keep it.
    member = sign_in(client, bruno_email)
    child = home.child_profiles[0]
    assert client.get(f"/api/v1/profiles/{child}/retention", headers=member).status_code == 404
    assert client.post(f"/api/v1/profiles/{child}/keep", headers=member).status_code == 404


def test_a_guardian_keeps_an_inactive_childs_profile(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    auth = sign_in(client, owner_email(home))
    r = client.post(f"/api/v1/profiles/{child}/keep", headers=auth)
    assert r.status_code == 409
    assert r.json()["code"] == "no_pending_inactivity"
    clock.advance(timedelta(days=549))
    run_sweep(container)
    auth = sign_in(client, owner_email(home))  # the earlier token has long expired
    pending = client.get(f"/api/v1/profiles/{child}/retention", headers=auth).json()
    assert pending["inactive_child"]["status"] == "pending"
    r = client.post(f"/api/v1/profiles/{child}/keep", headers=auth)
    assert r.status_code == 200, r.text
    kept = r.json()
    assert kept["status"] == "kept"
    assert kept["kept_how"] == "api"
    assert kept["kept_by"] == f"account:{home.accounts[owner_email(home)]}"
    assert kept["decided_at"] is not None
    assert client.post(f"/api/v1/profiles/{child}/keep", headers=auth).status_code == 409


def test_the_owner_manages_a_child_whose_guardian_is_another_adult(
    client: TestClient, container: Container, unique: str
) -> None:
    from tests.factories import password_hash
    from tutela.households import service as households
    from tutela.households.models import AccountRole

    owner_mail, parent_mail = f"olga.{unique}@example.com", f"piet.{unique}@example.com"
    spec = households.HomeSpec(
        adults=(
            households.AdultSpec("Olga", owner_mail, password_hash(container), AccountRole.OWNER),
            households.AdultSpec("Piet", parent_mail, password_hash(container)),
        ),
        children=(households.ChildSpec("Mia", date(2020, 5, 1), (parent_mail,)),),
    )
    with container.stores.session() as s:
        home = households.create_home(s, container.vault.keys, spec=spec, now=container.clock.now())
    child = home.child_profiles[0]
    owner = sign_in(client, owner_mail)
    r = client.put(
        f"/api/v1/profiles/{child}/auto-delete",
        json={"kind": "voice", "choice": "3m"},
        headers=owner,
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/profiles/{child}/retention", headers=owner).status_code == 200
    # Keeping an inactive child is the guardian's decision (A3), not the owner's.
    assert client.post(f"/api/v1/profiles/{child}/keep", headers=owner).status_code == 404
