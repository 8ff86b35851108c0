"""Consent and parents' rights as an attacker would try them (C3-C7): what is refused,
and what is never left behind."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import make_home
from tests.functional.conftest import owner_email, stored
from tests.functional.test_erasure_api import hold
from tests.functional.test_parental_consent import give, id_photo, stepped_up
from tutela.consent.models import ParentalConsent
from tutela.container import Container
from tutela.households.service import CreatedHome
from tutela.vault.models import MediaItem


@pytest.fixture
def home(container: Container, unique: str) -> CreatedHome:
    """A home whose child has no parental consent yet (C3)."""
    return make_home(container, tag=unique, parental_consent=False)


def _items_of(container: Container, profile_id: uuid.UUID) -> int:
    with container.stores.session() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(MediaItem).where(MediaItem.profile_id == profile_id)
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
