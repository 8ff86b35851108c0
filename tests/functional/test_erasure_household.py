"""The household sees its erasures: the other guardian, through the API and the console's
privacy page, sees a child's profile erased, by whom, its status and its receipt; an
adult's erasure of their own data stays theirs (C6, C7, S7)."""

from __future__ import annotations

import html
import re
import uuid

from fastapi.testclient import TestClient

from tests.functional.conftest import sign_in
from tests.functional.test_console_privacy import console_sign_in
from tests.functional.test_erasure_api import erase, stepped_up
from tests.integration.test_erasure_notices import CHILD, adult, two_guardians
from tutela.container import Container
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope

API = "/api/v1"


def listed(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    r = client.get(f"{API}/erasures", headers=headers)
    assert r.status_code == 200, r.text
    return {e["id"]: e for e in r.json()}


def deletions_row(page: str, request_id: str) -> str:
    section = re.search(r'<section class="card" id="deletions"(.*?)</section>', page, re.S)
    assert section is not None, "no deletions section"
    row = re.search(rf'<tr data-request="{request_id}">(.*?)</tr>', section.group(1), re.S)
    assert row is not None, f"request {request_id} not listed"
    return html.unescape(row.group(1))


def test_the_other_guardian_sees_a_childs_erasure_with_who_asked(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique)
    ana_email, _ = adult(home, "ana")
    bruno_email, _ = adult(home, "bruno")
    ana = stepped_up(client, ana_email)

    r = erase(client, ana, scope="profile", profile_id=str(home.child_profiles[0]))
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    assert (r.json()["asked_by"], r.json()["asked_by_you"]) == ("you", True)

    bruno = sign_in(client, bruno_email)
    seen = listed(client, bruno)[request_id]
    assert seen["asked_by"] == "Ana Marchetti"
    assert seen["asked_by_you"] is False
    assert seen["requested_by"] == "guardian"
    assert seen["scope"] == "profile"
    assert seen["status"] == "running"
    assert listed(client, ana)[request_id]["asked_by"] == "you"
    one = client.get(f"{API}/erasures/{request_id}", headers=bruno)
    assert one.status_code == 200 and one.json()["asked_by"] == "Ana Marchetti"

    console_sign_in(client, bruno_email)
    row = deletions_row(client.get("/account/privacy").text, request_id)
    assert "Ana Marchetti" in row
    assert "A child's profile, with everything recorded of the child" in row
    assert "In progress" in row and "Once complete" in row
    assert CHILD not in row

    assert container.erasure.run_pending().completed == 1
    row = deletions_row(client.get("/account/privacy").text, request_id)
    assert "Complete" in row
    assert f'href="/api/v1/receipts/{request_id}"' in row
    assert listed(client, bruno)[request_id]["receipt_url"] == f"{API}/receipts/{request_id}"


def test_an_adults_erasure_of_their_own_items_stays_theirs(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique)
    ana_email, _ = adult(home, "ana")
    bruno_email, _ = adult(home, "bruno")
    ana = stepped_up(client, ana_email)

    r = erase(
        client,
        ana,
        scope="items",
        profile_id=str(home.adult_profiles[ana_email]),
        kinds=["voice"],
    )
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]

    bruno = sign_in(client, bruno_email)
    assert request_id not in listed(client, bruno)
    assert client.get(f"{API}/erasures/{request_id}", headers=bruno).status_code == 404
    assert request_id in listed(client, ana)
    console_sign_in(client, bruno_email)
    page = client.get("/account/privacy").text
    assert request_id not in page
    assert "Nothing has been erased in your home yet." in page


def test_every_adult_sees_the_privacy_offices_request(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique)
    ana_email, _ = adult(home, "ana")
    officer = Requester(RequesterKind.PRIVACY_OFFICER, f"staff:{uuid.uuid4()}")
    row = container.erasure.request(
        Scope(
            ScopeKind.ITEMS,
            home.household_id,
            profile_id=home.adult_profiles[ana_email],
            kinds=("voice",),
        ),
        officer,
    )

    for email in home.accounts:
        seen = listed(client, sign_in(client, email))[str(row.id)]
        assert seen["asked_by"] == "Tutela's privacy office"
        assert seen["requested_by"] == "privacy_officer"
    console_sign_in(client, adult(home, "bruno")[0])
    assert "Tutela's privacy office" in deletions_row(
        client.get("/account/privacy").text, str(row.id)
    )
