"""A customer sees every look by an employee at their media, and a guardian at their
children's, in the API and the console, and never another household's (R3, R9); a look
the staff-access policy does not allow is refused and leaves no record (R2); erasure
takes the records with the profile, and an erased item out of them (A5, C1)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import PASSWORD, make_home, seed_media
from tests.functional.conftest import console_sign_in, owner_email, sign_in
from tests.functional.test_erasure_api import erase, stepped_up
from tutela.container import Container
from tutela.core.errors import TutelaError
from tutela.households.service import CreatedHome
from tutela.identity.staff import add_staff
from tutela.transparency.models import StaffMediaAccess

API = "/api/v1"


def employee(container: Container, role: str, tag: str | None = None) -> uuid.UUID:
    with container.stores.session() as s:
        added = add_staff(
            s,
            container.vault.keys,
            container.hasher,
            email=f"{role}.{tag or uuid.uuid4().hex[:8]}@operator.example",
            roles=[role],
            now=container.clock.now(),
        )
    return added.staff_id


def look(
    container: Container,
    home: CreatedHome,
    staff_id: uuid.UUID,
    *,
    role: str = "reviewer",
    purpose: str = "consented_review",
    item_id: uuid.UUID | None = None,
    profile_id: uuid.UUID | None = None,
    ticket: str | None = None,
    minutes_ago: int = 10,
) -> uuid.UUID:
    """Record one look as the access-control part will: in a transaction it commits."""
    with container.stores.session() as s:
        record_id = container.transparency.record_access(
            s,
            household_id=home.household_id,
            profile_id=profile_id or home.child_profiles[0],
            staff_id=staff_id,
            staff_role=role,
            purpose=purpose,
            policy_id="reviewer-consented-review",
            accessed_at=container.clock.now() - timedelta(minutes=minutes_ago),
            item_id=item_id,
            ticket=ticket,
        )
        s.commit()
    return record_id


def records(container: Container, household_id: uuid.UUID) -> int:
    with container.stores.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(StaffMediaAccess)
                .where(StaffMediaAccess.household_id == household_id)
            )
            or 0
        )


def access_log(client: TestClient, headers: dict[str, str], **params: str) -> list[dict]:  # type: ignore[type-arg]
    r = client.get(f"{API}/access-log", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["accesses"])


def test_a_parent_sees_who_viewed_their_childs_recording_why_and_when(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    made = seed_media(container, home, clips=0)
    voice = made["voice"][0]
    reviewer = employee(container, "reviewer", "r1")
    look(container, home, reviewer, item_id=voice, minutes_ago=30)
    look(
        container,
        home,
        reviewer,
        purpose="safety_review",
        item_id=voice,
        ticket="TS-1182",
        minutes_ago=5,
    )
    headers = sign_in(client, owner_email(home))
    r = client.get(f"{API}/access-log", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["notice_url"] == "/notices/staff-access"
    newest, older = body["accesses"]
    assert newest["purpose"] == "safety_review" and newest["ticket"] == "TS-1182"
    assert newest["purpose_title"] == "Safety review"
    assert older["purpose"] == "consented_review" and older["ticket"] is None
    assert newest["accessed_at"] > older["accessed_at"]
    # A role and a pseudonym, the same for the same employee; never who they are (R9).
    assert re.fullmatch(r"Trust & Safety reviewer #[0-9a-f]{4}", newest["who"])
    assert newest["who"] == older["who"]
    assert str(reviewer) not in r.text and "operator.example" not in r.text
    assert newest["item"]["id"] == str(voice) and newest["item"]["kind"] == "voice"
    assert newest["item"]["captured_at"]
    assert newest["profile_id"] == str(home.child_profiles[0])
    assert newest["item_erased"] is False and newest["target"] == "item"


def test_two_employees_have_different_pseudonyms(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    look(container, home, employee(container, "reviewer"))
    look(container, home, employee(container, "reviewer"), minutes_ago=3)
    officer = employee(container, "privacy_officer")
    look(container, home, officer, role="privacy_officer", purpose="break_glass", minutes_ago=1)
    entries = access_log(client, sign_in(client, owner_email(home)))
    assert len({e["who"] for e in entries}) == 3
    assert entries[0]["who"].startswith("Privacy officer #")
    assert entries[0]["target"] == "profile" and entries[0]["item"] is None


def test_the_log_is_paged_and_filtered_by_profile_and_time(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    reviewer = employee(container, "reviewer")
    for minutes in (50, 40, 30):
        look(container, home, reviewer, minutes_ago=minutes)
    headers = sign_in(client, owner_email(home))
    first = client.get(f"{API}/access-log", params={"limit": "2"}, headers=headers).json()
    assert len(first["accesses"]) == 2 and first["next_cursor"]
    second = client.get(
        f"{API}/access-log", params={"limit": "2", "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert len(second["accesses"]) == 1 and second["next_cursor"] is None
    seen = [e["id"] for e in first["accesses"] + second["accesses"]]
    assert len(set(seen)) == 3
    since = (container.clock.now() - timedelta(minutes=45)).isoformat()
    assert len(access_log(client, headers, since=since)) == 2
    child = str(home.child_profiles[0])
    assert len(access_log(client, headers, profile_id=child)) == 3
    mine = str(home.adult_profiles[owner_email(home)])
    assert access_log(client, headers, profile_id=mine) == []
    bad = client.get(f"{API}/access-log", params={"cursor": "not-a-cursor"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    big = client.get(f"{API}/access-log", params={"limit": "100000"}, headers=headers)
    assert big.status_code == 422 and big.json()["code"] == "page_too_large"
    assert client.get(f"{API}/access-log").status_code == 401


def test_another_household_sees_nothing_and_its_profiles_answer_404(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    look(container, home, employee(container, "reviewer"))
    other = sign_in(client, owner_email(other_home))
    assert access_log(client, other) == []
    r = client.get(
        f"{API}/access-log", params={"profile_id": str(home.child_profiles[0])}, headers=other
    )
    assert r.status_code == 404 and r.json()["code"] == "profile_not_found"
    # The household's own log still holds it.
    assert len(access_log(client, sign_in(client, owner_email(home)))) == 1


def test_an_adult_who_is_not_the_childs_guardian_sees_only_their_own(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique + "g", second_adult=True)
    second = next(e for e in home.accounts if e.startswith("bruno."))
    reviewer = employee(container, "reviewer")
    look(container, home, reviewer)  # the child, whose guardian is the owner alone
    look(container, home, reviewer, profile_id=home.adult_profiles[second], minutes_ago=2)
    entries = access_log(client, sign_in(client, second))
    assert [e["profile_id"] for e in entries] == [str(home.adult_profiles[second])]
    assert len(access_log(client, sign_in(client, owner_email(home)))) == 1


@pytest.mark.parametrize(
    ("role", "purpose", "ticket", "item", "code"),
    [
        # The nursery camera is never reviewable, nor its thumbnails.
        ("reviewer", "consented_review", None, "video", "private_zone"),
        ("reviewer", "consented_review", None, "thumbnail", "private_zone"),
        # A reviewer does not answer legal process; support sees no media at all.
        ("reviewer", "legal_process", "LP-1", "voice", "access_not_in_policy"),
        ("support", "support_ticket", "SUP-9", "voice", "access_not_in_policy"),
        # The administrator's emergency access does not reach locations.
        ("admin", "break_glass", None, "location", "access_not_in_policy"),
        ("reviewer", "support_ticket", None, "voice", "ticket_required"),
        ("reviewer", "curiosity", None, "voice", "unknown_access_purpose"),
        ("reviewer", "consented_review", "<script>", "voice", "invalid_ticket"),
    ],
)
def test_a_look_the_policy_does_not_allow_is_refused_and_leaves_nothing(
    container: Container,
    home: CreatedHome,
    role: str,
    purpose: str,
    ticket: str | None,
    item: str,
    code: str,
) -> None:
    made = seed_media(container, home)
    staff = employee(container, role)
    with pytest.raises(TutelaError) as refused:
        look(
            container, home, staff, role=role, purpose=purpose, ticket=ticket, item_id=made[item][0]
        )
    assert refused.value.code == code
    assert records(container, home.household_id) == 0


def test_a_look_under_a_role_the_employee_does_not_hold_or_at_another_households_item(
    container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    support = employee(container, "support")
    with pytest.raises(TutelaError) as refused:
        look(container, home, support, role="reviewer")
    assert refused.value.code == "role_not_held"
    theirs = seed_media(container, other_home, clips=0)["voice"][0]
    with pytest.raises(TutelaError) as refused:
        look(container, home, employee(container, "reviewer"), item_id=theirs)
    assert refused.value.code == "item_not_found"
    assert records(container, home.household_id) == 0


def test_the_console_says_who_viewed_what_in_plain_words(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    voice = seed_media(container, home, clips=0)["voice"][0]
    look(
        container,
        home,
        employee(container, "reviewer"),
        purpose="support_ticket",
        ticket="SUP-4411",
        item_id=voice,
    )
    console_sign_in(client, owner_email(home))
    page = client.get("/privacy/access")
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert "Who at Tutela Home viewed your recordings" in text
    assert re.search(
        r"UTC</time>: Trust &amp; Safety reviewer <span class=\"pseudonym\">#[0-9a-f]{4}</span>"
        r" viewed Lily Marchetti&#39;s voice recording from <time",
        text,
    )
    assert "viewed Lily Marchetti&#39;s voice recording from" in text
    assert "Why: A support case you opened, case SUP-4411." in text
    assert 'href="/notices/staff-access"' in text
    assert "No one at" not in text
    privacy = client.get("/account/privacy")
    assert 'href="/privacy/access"' in privacy.text


def test_the_console_says_honestly_when_no_one_has_looked(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    look(container, other_home, employee(container, "reviewer"))
    assert client.get("/privacy/access", follow_redirects=False).headers["location"] == "/login"
    console_sign_in(client, owner_email(home), PASSWORD)
    page = client.get("/privacy/access")
    assert page.status_code == 200
    assert "No one at Tutela Home has viewed your recordings." in page.text
    assert "Otto" not in page.text
    bad = client.get("/privacy/access", params={"cursor": "xyz"})
    assert bad.status_code == 422 and "page cursor is not valid" in bad.text


def test_erasing_a_profile_erases_its_access_records_and_the_check_finds_none(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    voice = seed_media(container, home, clips=0)["voice"][0]
    reviewer = employee(container, "reviewer")
    look(container, home, reviewer, item_id=voice)
    look(container, home, reviewer, minutes_ago=2)
    mine = home.adult_profiles[owner_email(home)]
    look(container, home, reviewer, profile_id=mine, minutes_ago=1)
    email = owner_email(home)
    headers = stepped_up(client, email)
    r = erase(client, headers, scope="profile", profile_id=str(home.child_profiles[0]))
    assert r.status_code == 202, r.text
    # The remnant check passes only when no row of the profile is left, these included.
    assert container.erasure.run_pending().completed == 1
    done = client.get(f"{API}/erasures/{r.json()['id']}", headers=headers).json()
    assert done["status"] == "completed"
    with container.stores.session() as s:
        left = s.scalars(
            select(StaffMediaAccess.profile_id).where(
                StaffMediaAccess.household_id == home.household_id
            )
        ).all()
    assert left == [mine]
    assert [e["profile_id"] for e in access_log(client, headers)] == [str(mine)]


def test_erasing_a_recording_keeps_the_look_but_nothing_of_the_recording(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    voice = seed_media(container, home, clips=0)["voice"][0]
    look(container, home, employee(container, "reviewer"), item_id=voice)
    headers = sign_in(client, owner_email(home))
    r = erase(client, headers, scope="item", item_id=str(voice))
    assert r.status_code == 202, r.text
    # Complete: the raw scan of the database files found the item's id nowhere (A5, C1).
    assert container.erasure.run_pending().completed == 1
    (entry,) = access_log(client, headers)
    assert entry["item"] is None and entry["item_erased"] is True
    assert str(voice) not in client.get(f"{API}/access-log", headers=headers).text
    with container.stores.session() as s:
        assert s.scalar(select(StaffMediaAccess.item_id)) is None
    console_sign_in(client, owner_email(home))
    assert "a recording that has since been erased" in client.get("/privacy/access").text


def test_erasing_the_household_erases_every_record(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    look(container, home, employee(container, "reviewer"))
    headers = stepped_up(client, owner_email(home))
    r = erase(client, headers, scope="household")
    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    assert records(container, home.household_id) == 0


def test_records_older_than_the_policy_keeps_them_are_pruned(
    container: Container, home: CreatedHome
) -> None:
    reviewer = employee(container, "reviewer")
    look(container, home, reviewer, minutes_ago=731 * 24 * 60)
    look(container, home, reviewer, minutes_ago=5)
    # The scheduled retention sweep prunes them, by the staff-access policy's 2 years.
    container.retention_pass()
    assert records(container, home.household_id) == 1
    with container.stores.session() as s:
        assert container.transparency.prune(s, now=container.clock.now()) == 0
