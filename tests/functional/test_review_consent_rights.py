"""Consent and parents' rights as an attacker would try them (C3-C7): what is refused,
and what is never left behind."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import device_token, make_home, password_hash, seed_media
from tests.functional.conftest import owner_email, sign_in, stored
from tests.functional.test_erasure_api import hold
from tests.functional.test_parental_consent import PDF, give, id_photo, stepped_up
from tests.mailbox import mail_to
from tutela.consent.models import ParentalConsent
from tutela.container import Container
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole
from tutela.households.service import AdultSpec, ChildSpec, CreatedHome, DeviceSpec, HomeSpec
from tutela.notices.models import OutboxMessage
from tutela.retention.models import ConsentContact
from tutela.vault.models import ItemState, MediaItem


@pytest.fixture
def home(container: Container, unique: str) -> CreatedHome:
    """A home whose child has no parental consent yet (C3)."""
    return make_home(container, tag=unique, parental_consent=False)


def _items_of(container: Container, profile_id: uuid.UUID) -> int:
    with container.stores.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(MediaItem)
                .where(MediaItem.profile_id == profile_id)
            )
            or 0
        )


def test_an_id_photo_is_never_kept_when_a_legal_hold_covers_the_parent(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3: a government ID is deleted right after its check. Under a legal hold the one
    deletion path refuses to erase, so the photo must not be taken at all: the attempt is
    refused before a byte of it is stored, and no snapshot of it is left readable."""
    headers = stepped_up(client, owner_email(home))
    hold(container, home.household_id, None)
    before = stored(container)

    r = give(
        client,
        headers,
        home.child_profiles[0],
        "id_check",
        document=("id.jpg", id_photo("1984-06-02"), "image/jpeg"),
    )

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "legal_hold"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert _items_of(container, home.adult_profiles[owner_email(home)]) == 0
    assert stored(container) == before
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(ParentalConsent)) == 0


def test_an_adult_who_is_no_guardian_cannot_ask_a_parent_about_the_child(
    client: TestClient, container: Container, unique: str
) -> None:
    """C5, C6: only a child's guardian acts for the child. Another adult of the same home
    may not mail a stranger about the child, nor spend the child's asks of the day: the
    child is not found for them, as a missing id or another household's is."""
    home = make_home(container, tag=unique + "b", second_adult=True, parental_consent=False)
    bruno = sign_in(client, f"bruno.{unique}b@example.com")
    child = home.child_profiles[0]

    answers = [
        client.post(
            f"/api/v1/profiles/{profile}/parental-consent/ask",
            json={"email": "stranger@example.net"},
            headers=bruno,
        )
        for profile in (child, uuid.uuid4())
    ]

    assert [r.status_code for r in answers] == [404, 404], [r.text for r in answers]
    bodies = [{k: v for k, v in r.json().items() if k != "instance"} for r in answers]
    assert bodies[0] == bodies[1]
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsentContact)) == 0


def _two_guardians(container: Container, tag: str) -> CreatedHome:
    spec = HomeSpec(
        adults=(
            AdultSpec(
                "Ana Marchetti",
                f"ana.{tag}@example.com",
                password_hash(container),
                AccountRole.OWNER,
            ),
            AdultSpec("Bruno Marchetti", f"bruno.{tag}@example.com", password_hash(container)),
        ),
        children=(
            ChildSpec(
                "Lily Marchetti",
                date(2019, 3, 14),
                (f"ana.{tag}@example.com", f"bruno.{tag}@example.com"),
            ),
        ),
        devices=(DeviceSpec("voice", "Kitchen speaker"),),
    )
    with container.stores.session() as session:
        return households.create_home(
            session, container.vault.keys, spec=spec, now=container.clock.now()
        )


def test_the_other_guardian_is_told_when_a_parents_verified_consent_starts_recording(
    client: TestClient, container: Container, unique: str
) -> None:
    """C6: each guardian hears of every change of a child's consent, the grants that rest
    on a parent's verification included: recording a child never starts unseen by the
    child's other guardian."""
    home = _two_guardians(container, unique)
    ana = stepped_up(client, f"ana.{unique}@example.com")
    bruno = home.accounts[f"bruno.{unique}@example.com"]
    child = home.child_profiles[0]

    r = give(
        client,
        ana,
        child,
        "signed_form",
        purposes=("storage",),
        document=("form.pdf", PDF, "application/pdf"),
        typed_name="Ana Marchetti",
        signed_on=container.clock.now().date().isoformat(),
    )

    assert r.status_code == 201, r.text
    with container.stores.session() as s:
        told = s.scalars(
            select(OutboxMessage.account_id).where(
                OutboxMessage.household_id == home.household_id,
                OutboxMessage.kind == "consent_changed",
            )
        ).all()
    assert bruno in told
    mails = mail_to(container.settings.mail_path, f"bruno.{unique}@example.com")
    assert any("Lily Marchetti" in m and "Ana Marchetti" in m for m in mails), mails


def test_a_selection_never_hides_an_item_of_another_profile(
    container: Container, unique: str
) -> None:
    """C6: a selection erases only its own profile's items. An id of another profile of
    the household, slipped into it, is not marked as being erased: it would leave the
    other person's review, exports and listings without ever being erased."""
    home = make_home(container, tag=unique + "s")
    child_item = seed_media(container, home, voices=1, clips=0)["voice"][0]
    adult = home.adult_profiles[owner_email(home)]
    own_item = seed_media(container, home, profile=adult, voices=1, clips=0)["voice"][0]

    container.erasure.start(
        Scope(
            ScopeKind.ITEMS,
            home.household_id,
            profile_id=adult,
            item_ids=(own_item, child_item),
        ),
        Requester(RequesterKind.ADULT, f"account:{home.accounts[owner_email(home)]}"),
    )

    with container.stores.session() as s:
        child = s.get(MediaItem, (home.household_id, child_item))
        assert child is not None and child.state == ItemState.ACTIVE
        own = s.get(MediaItem, (home.household_id, own_item))
        assert own is not None and own.state != ItemState.ACTIVE


def test_a_device_cannot_read_or_change_consent(
    client: TestClient, container: Container, unique: str
) -> None:
    """C3, C6: consent is a person's decision; a device's token opens no consent route."""
    home = make_home(container, tag=unique + "d")
    child = home.child_profiles[0]
    device = {"authorization": f"Bearer {device_token(home, container, 'voice')}"}
    api = f"/api/v1/profiles/{child}"

    answers = [
        client.get(f"{api}/consent", headers=device),
        client.post(
            f"{api}/consent",
            json={"notice_version": 1, "changes": {"storage": False}},
            headers=device,
        ),
        client.post(f"{api}/consent/refuse", headers=device),
        client.post(
            f"{api}/parental-consent",
            data={"method": "card_check", "notice_version": "1", "purposes": ["storage"]},
            headers=device,
        ),
    ]

    assert [r.status_code for r in answers] == [401] * 4, [r.text for r in answers]
    r = client.get("/api/v1/device", headers=device)
    assert r.status_code == 200
    [mine] = [p for p in r.json()["profiles"] if p["profile_id"] == str(child)]
    assert {p["purpose"]: p["accepted"] for p in mine["purposes"]}["storage"] is True
    assert "Lily" not in r.text and "Marchetti" not in r.text


def test_a_change_under_a_notice_never_published_is_refused(
    client: TestClient, container: Container, unique: str
) -> None:
    """C3: each event records the notice the person was shown. A withdrawal under an older
    notice is taken (a page left open); one under a version that was never published would
    put false evidence in the ledger, and is refused with nothing appended."""
    home = make_home(container, tag=unique + "n")
    headers = sign_in(client, owner_email(home))
    own = f"/api/v1/profiles/{home.adult_profiles[owner_email(home)]}/consent"
    current = client.get("/api/v1/consent/purposes").json()["notice_version"]

    r = client.post(
        own, json={"notice_version": current + 1, "changes": {"storage": False}}, headers=headers
    )

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "notice_changed"
    assert client.get(own + "/history", headers=headers).json() == []
