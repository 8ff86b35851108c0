"""A second factor for every adult who can see camera media (R5), API and console.

The settlement's failure: credential stuffing reached stored video through accounts
without a second factor, the other parent's included. Here the other parent, a guardian
of the filmed child, is asked for a factor before any camera media; a session opened
before the home's first camera is refused camera media once it arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient

from tests.factories import grant_parental_consent, password_hash, seed_media, wav_bytes
from tests.functional.conftest import console_sign_in, sign_in, upload_voice
from tests.functional.test_sign_in_api import add_totp
from tutela.app import create_app
from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.households import service as households
from tutela.households.models import AccountRole
from tutela.households.service import AdultSpec, ChildSpec, CreatedHome, DeviceSpec, HomeSpec

API = "/api/v1"


@pytest.fixture
def r5(container: Container, clock: FakeClock) -> Iterator[tuple[Container, TestClient]]:
    """The app as deployed: R5 on (the suite's default turns it off for other parts)."""
    built = build(
        container.settings.model_copy(update={"mfa_required_for_camera_viewers": True}),
        clock=clock,
    )
    with TestClient(create_app(container=built)) as test_client:
        yield built, test_client
    built.close()


def two_parent_home(container: Container, tag: str, *, camera: bool) -> CreatedHome:
    """Ana (owner) and Bruno, both guardians of Lily; a nursery camera if `camera`."""
    ana, bruno = f"ana.{tag}@example.com", f"bruno.{tag}@example.com"
    devices = [DeviceSpec("voice", "Kitchen speaker"), DeviceSpec("phone", "Family phone")]
    if camera:
        devices.append(DeviceSpec("camera", "Nursery camera", "nursery"))
    spec = HomeSpec(
        adults=(
            AdultSpec("Ana Marchetti", ana, password_hash(container), AccountRole.OWNER),
            AdultSpec("Bruno Marchetti", bruno, password_hash(container)),
        ),
        children=(ChildSpec("Lily Marchetti", date(2019, 3, 14), (ana, bruno)),),
        devices=tuple(devices),
    )
    with container.stores.session() as session:
        home = households.create_home(
            session, container.vault.keys, spec=spec, now=container.clock.now()
        )
    grant_parental_consent(container, home)
    return home


def second_parent(home: CreatedHome) -> str:
    return next(email for email in home.accounts if email.startswith("bruno."))


def add_camera_behind_the_sessions(container: Container, home: CreatedHome) -> None:
    """A camera registered without demoting anyone: what a session opened earlier would
    still carry if only its stored stage were trusted."""
    with container.stores.session() as session:
        households.register_device(
            session,
            household_id=home.household_id,
            spec=households.DeviceSpec(kind="camera", label="Nursery camera", zone="nursery"),
            now=container.clock.now(),
        )


def test_the_second_parent_is_asked_for_a_factor_before_any_camera_media(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    container, client = r5
    home = two_parent_home(container, unique, camera=True)
    clips = seed_media(container, home, voices=1, clips=1)
    snapshot = clips["video"][0]

    headers = sign_in(client, second_parent(home))
    security = client.get(f"{API}/account/security", headers=headers).json()
    assert (security["stage"], security["mfa_required"]) == ("enrol", True)
    for path in (f"{API}/items", f"{API}/items/{snapshot}", f"{API}/items/{snapshot}/content"):
        refused = client.get(path, headers=headers)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "mfa_enrolment_required"

    add_totp(client, container, headers)
    assert client.get(f"{API}/account/security", headers=headers).json()["stage"] == "full"
    listed = client.get(f"{API}/items", params={"kind": "video"}, headers=headers)
    assert listed.status_code == 200
    assert [i["id"] for i in listed.json()["items"]] == [str(snapshot)]
    assert client.get(f"{API}/items/{snapshot}/content", headers=headers).status_code == 200


def test_the_second_parent_in_the_console_is_sent_to_the_security_page(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    container, client = r5
    home = two_parent_home(container, unique, camera=True)
    seed_media(container, home, voices=1, clips=1)
    landed = console_sign_in(client, second_parent(home))
    assert landed.headers["location"] == "/account/security"
    page = client.get(f"/profiles/{home.child_profiles[0]}", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/account/security"
    assert "second factor" in client.get("/account/security").text.lower()


def test_a_session_opened_before_the_first_camera_is_refused_camera_media_after_it(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    """The live check: the stage stored at sign-in was `full`, and stays so in the row;
    every media route checks again and answers 403 second_factor_required."""
    container, client = r5
    home = two_parent_home(container, unique, camera=False)
    item = upload_voice(client, container, home, body=wav_bytes(0.2))
    headers = sign_in(client, second_parent(home))
    assert client.get(f"{API}/items", headers=headers).status_code == 200
    console_sign_in(client, second_parent(home))
    assert client.get(f"/profiles/{home.child_profiles[0]}").status_code == 200

    add_camera_behind_the_sessions(container, home)

    for path in (f"{API}/items", f"{API}/items/{item}", f"{API}/items/{item}/content"):
        refused = client.get(path, headers=headers)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "second_factor_required"
    # The console: its profile page and the media it plays (the same API, by cookie).
    page = client.get(f"/profiles/{home.child_profiles[0]}", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/account/security")
    assert client.get(f"{API}/items/{item}/content").status_code == 403
    # A copy of the data is media too: not asked for, not downloaded, without a factor.
    copy = client.post(f"{API}/profiles/{home.child_profiles[0]}/exports", headers=headers)
    assert (copy.status_code, copy.json()["code"]) == (403, "second_factor_required")


def test_registering_the_first_camera_demotes_open_sessions_without_a_factor(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    container, client = r5
    home = two_parent_home(container, unique, camera=False)
    owner = next(iter(home.accounts))
    parent = sign_in(client, second_parent(home))
    owner_headers = sign_in(client, owner)
    assert client.get(f"{API}/profiles", headers=parent).status_code == 200

    added = client.post(
        f"{API}/devices",
        json={"kind": "camera", "label": "Nursery camera", "zone": "nursery"},
        headers=owner_headers,
    )
    assert added.status_code == 201, added.text

    for headers in (parent, owner_headers):
        security = client.get(f"{API}/account/security", headers=headers).json()
        assert (security["stage"], security["mfa_required"]) == ("enrol", True)
        refused = client.get(f"{API}/profiles", headers=headers)
        assert refused.json()["code"] == "mfa_enrolment_required"


def test_camera_media_left_by_a_revoked_camera_still_needs_a_factor(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    """A revoked camera's clips are still camera media for whoever can see them."""
    container, client = r5
    home = two_parent_home(container, unique, camera=True)
    seed_media(container, home, voices=0, clips=1)
    with container.stores.session() as session:
        for device in households.list_devices(session, household_id=home.household_id):
            if device.kind == "camera":
                households.revoke_device(
                    session,
                    household_id=home.household_id,
                    device_id=device.id,
                    now=container.clock.now(),
                )
    headers = sign_in(client, second_parent(home))
    assert client.get(f"{API}/account/security", headers=headers).json()["stage"] == "enrol"


def test_a_home_without_cameras_asks_no_factor_of_its_adults(
    r5: tuple[Container, TestClient], unique: str
) -> None:
    container, client = r5
    home = two_parent_home(container, unique, camera=False)
    upload_voice(client, container, home, body=wav_bytes(0.2))
    headers = sign_in(client, second_parent(home))
    security = client.get(f"{API}/account/security", headers=headers).json()
    assert (security["stage"], security["mfa_required"]) == ("full", False)
    assert client.get(f"{API}/items", headers=headers).status_code == 200
