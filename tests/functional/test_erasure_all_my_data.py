"""An adult's "erase everything about me" in one request over the HTTP API (C6, C7, A5,
A8): `items` without kinds erases every kind of their own items, nobody else's, and
keeps their account signed in."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient

from tests.factories import home_device, jpeg_bytes, make_home, seed_media, wav_bytes
from tests.functional.conftest import sign_in, stored, upload_voice
from tests.functional.test_erasure_api import (
    API,
    erase,
    item_ids,
    public_key,
    readable,
    stepped_up,
)
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.erasure import receipts
from tutela.households.service import CreatedHome
from tutela.vault import service as vault


def _snapshot(container: Container, home: CreatedHome, profile: uuid.UUID) -> uuid.UUID:
    """A camera snapshot of `profile` (seed_media makes none)."""
    camera = home_device(container, home, "camera")
    with container.stores.session() as s:
        item = vault.ingest_media(
            s,
            container.vault,
            consent=container.consent,
            device=camera,
            profile_id=profile,
            kind="snapshot",
            declared_type="image/jpeg",
            captured_at=container.clock.now() - timedelta(hours=2),
            body=jpeg_bytes(),
            limits=container.limits,
            now=container.clock.now(),
        )
        return item.id


def test_an_adult_erases_every_kind_of_their_own_data_in_one_request_and_stays_signed_in(
    client: TestClient, container: Container, clock: FakeClock, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    ana_email, bruno_email = list(home.accounts)
    ana, bruno = home.adult_profiles[ana_email], home.adult_profiles[bruno_email]
    mine = seed_media(container, home, profile=ana)
    mine["snapshot"].append(_snapshot(container, home, ana))
    assert all(mine[kind] for kind in mine)  # every kind of item, derived ones included
    own = {i for ids in mine.values() for i in ids}
    others = {
        i
        for profile in (bruno, home.child_profiles[0])
        for ids in seed_media(container, home, profile=profile, clips=1).values()
        for i in ids
    }

    # Everything at once is bulk and irreversible: a fresh second factor first (C7).
    before = stored(container)
    plain = sign_in(client, ana_email)
    refused = erase(client, plain, scope="items", profile_id=str(ana))
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"
    assert stored(container) == before

    headers = stepped_up(client, ana_email)
    r = erase(client, headers, scope="items", profile_id=str(ana))
    assert r.status_code == 202, r.text
    assert (r.json()["scope"], r.json()["requested_by"]) == ("items", "adult")
    assert not any(readable(container, home.household_id, i) for i in own)
    assert container.erasure.run_pending().completed == 1

    assert item_ids(container, home.household_id) == others
    assert all(readable(container, home.household_id, i) for i in others)
    document = client.get(f"{API}/receipts/{r.json()['id']}")
    body = receipts.verify(document.content, public_key(client))
    assert body["counts"] == {kind: len(ids) for kind, ids in mine.items()}
    assert body["scope"]["kind"] == "items" and body["scope"]["kinds"] == []
    assert body["remnant_check"]["result"] == "clean"

    # The account stays: the same session still works, and what comes next is kept.
    me = client.get(f"{API}/me", headers=headers)
    assert me.status_code == 200, me.text
    profiles = client.get(f"{API}/profiles", headers=headers).json()
    assert str(ana) in {p["id"] for p in profiles}
    left = client.get(f"{API}/items", params={"profile_id": str(ana)}, headers=headers)
    assert left.json()["items"] == []
    clock.advance(timedelta(minutes=10))
    later = upload_voice(client, container, home, body=wav_bytes(0.2), profile=ana, minutes_ago=1)
    content = client.get(f"{API}/items/{later}/content", headers=headers)
    assert content.status_code == 200
