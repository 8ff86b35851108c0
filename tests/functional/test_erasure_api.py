"""Erasure through the HTTP API: what a parent, an owner and a privacy officer see (C6, C10,
C7, A8, S6, S7, S8).

A request answers 202 once its keys are destroyed: from that answer on, nothing in scope
can be read. The rest of the job runs in a worker; these tests run its pass themselves
(the test settings turn the embedded worker off).
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.factories import PASSWORD, device_token, make_home, seed_media, wav_bytes
from tests.functional.conftest import owner_email, sign_in, stored, upload_voice
from tests.functional.test_sign_in_api import (
    add_security_key,
    add_totp,
    assertion,
    authenticator,
    next_code,
    second_factor,
    signed_in,
)
from tests.functional.test_sign_in_api import sign_in as sign_in_as
from tests.functional.test_staff import NEW_PASSWORD, change_password, staff_add
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.erasure import receipts
from tutela.erasure.engine import ErasureEngine
from tutela.erasure.models import ErasureRequest, Step
from tutela.households.models import Household, Profile
from tutela.households.service import CreatedHome
from tutela.retention.policy import default_policy_path, parse_policy
from tutela.vault.models import MediaItem

API = "/api/v1"


def stepped_up(client: TestClient, email: str) -> dict[str, str]:
    """A session that confirmed it is its holder a moment ago (C7)."""
    headers = sign_in(client, email)
    r = client.post(f"{API}/auth/step-up", json={"password": PASSWORD}, headers=headers)
    assert r.status_code == 204, r.text
    return headers


def erase(
    client: TestClient, headers: dict[str, str], key: str | None = None, **body: object
) -> httpx.Response:
    extra = {"idempotency-key": key} if key else {}
    return client.post(f"{API}/erasures", json=body, headers={**headers, **extra})


def readable(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    try:
        container.vault.keys.item_key(household_id=household_id, item_id=item_id)
    except KeyUnavailable:
        return False
    return True


def item_ids(container: Container, household_id: uuid.UUID) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id).where(MediaItem.household_id == household_id)))


def listed(client: TestClient, headers: dict[str, str]) -> set[str]:
    r = client.get(f"{API}/items", params={"limit": "200"}, headers=headers)
    assert r.status_code == 200, r.text
    return {i["id"] for i in r.json()["items"]}


def public_key(client: TestClient) -> Ed25519PublicKey:
    r = client.get(f"{API}/receipts/public-key")
    assert r.status_code == 200
    return receipts.load_public_key(r.content)


def test_a_parent_erases_a_recording_unreadable_before_the_answer_with_a_signed_receipt(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    audio = wav_bytes(0.3)
    item = upload_voice(client, container, home, body=audio)
    kept = upload_voice(client, container, home, body=wav_bytes(0.2, pitch=300))
    headers = sign_in(client, owner_email(home))
    assert client.get(f"{API}/items/{item}/content", headers=headers).content == audio

    r = erase(client, headers, scope="item", item_id=item)
    assert r.status_code == 202, r.text
    answer = r.json()
    # Unreadable as soon as the answer is given: the item's key is gone (S6).
    assert not readable(container, home.household_id, uuid.UUID(item))
    gone = client.get(f"{API}/items/{item}/content", headers=headers)
    assert gone.status_code == 404
    assert answer["status"] == "running" and answer["receipt_url"] is None
    assert answer["confirmed_at"] is not None  # the answer is the confirmation (S8)
    assert answer["requested_by"] == "guardian"

    assert container.erasure.run_pending().completed == 1
    status = client.get(f"{API}/erasures/{answer['id']}", headers=headers).json()
    assert status["status"] == "completed"
    assert status["receipt_url"] == f"{API}/receipts/{answer['id']}"
    assert answer["id"] in {e["id"] for e in client.get(f"{API}/erasures", headers=headers).json()}

    document = client.get(status["receipt_url"])
    assert document.status_code == 200
    body = receipts.verify(document.content, public_key(client))
    assert body["request_id"] == answer["id"]
    assert body["counts"] == {"voice": 1}
    assert body["remnant_check"]["result"] == "clean"
    assert body["deadline_met"] is True
    tampered = json.loads(document.content)
    tampered["receipt"]["counts"]["voice"] = 0
    with pytest.raises(receipts.ReceiptInvalid) as refused:
        receipts.verify(json.dumps(tampered), public_key(client))
    assert refused.value.code == "receipt_invalid"

    assert client.get(f"{API}/items/{kept}/content", headers=headers).status_code == 200
    assert item not in listed(client, headers)


def test_a_parent_erases_a_childs_voice_recordings_and_keeps_the_rest(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    made = seed_media(container, home)
    headers = sign_in(client, owner_email(home))

    # Bulk and irreversible: a fresh second factor (or password) first (C7).
    refused = erase(client, headers, scope="items", profile_id=str(child), kinds=["voice"])
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"
    headers = stepped_up(client, owner_email(home))
    r = erase(client, headers, scope="items", profile_id=str(child), kinds=["voice"])
    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1

    left = listed(client, headers)
    assert not left & {str(i) for i in made["voice"] + made["transcript"]}
    assert {str(i) for i in made["video"] + made["thumbnail"] + made["location"]} <= left


def test_erasing_a_childs_profile_needs_a_step_up_then_stops_reads_and_uploads(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    made = seed_media(container, home)
    email = owner_email(home)
    headers = sign_in(client, email)

    refused = erase(client, headers, scope="profile", profile_id=str(child))
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"
    assert len(listed(client, headers)) == sum(len(v) for v in made.values())

    headers = stepped_up(client, email)
    r = erase(client, headers, scope="profile", profile_id=str(child))
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    # From the answer on, the child's data is not shown and no more is taken (C6).
    assert listed(client, headers) == set()
    for item_id in made["voice"]:
        assert client.get(f"{API}/items/{item_id}/content", headers=headers).status_code == 404
    before = stored(container)
    when = (container.clock.now() - timedelta(minutes=1)).isoformat()
    upload = client.post(
        f"{API}/ingest/media",
        params={"profile_id": str(child), "kind": "voice", "captured_at": when},
        content=wav_bytes(0.2),
        headers={
            "authorization": f"Bearer {device_token(home, container, 'voice')}",
            "content-type": "audio/wav",
        },
    )
    assert upload.status_code == 409, upload.text
    assert upload.json()["code"] == "under_erasure"
    assert stored(container) == before

    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        assert s.get(Profile, (home.household_id, child)) is None
    assert item_ids(container, home.household_id) == set()
    done = client.get(f"{API}/erasures/{request_id}", headers=headers).json()
    assert done["status"] == "completed" and done["scope"] == "profile"


def test_a_transcript_of_a_recording_under_erasure_is_refused(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    item = upload_voice(client, container, home, body=wav_bytes(0.2))
    headers = sign_in(client, owner_email(home))
    assert erase(client, headers, scope="item", item_id=item).status_code == 202

    before = stored(container)
    r = client.post(
        f"{API}/ingest/transcripts",
        json={"source_item_id": item, "text": "play the dinosaur song"},
        headers={"authorization": f"Bearer {device_token(home, container, 'voice')}"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "under_erasure"
    assert stored(container) == before


def test_the_owner_closes_the_household_and_everything_goes(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    other = make_home(container, tag=unique + "x", child_name="Otto Lindqvist")
    seed_media(container, home)
    theirs = seed_media(container, other, voices=1, clips=0)
    owner, adult = list(home.accounts)

    not_owner = erase(client, stepped_up(client, adult), scope="household")
    assert not_owner.status_code == 403
    assert not_owner.json()["code"] == "owner_only"
    owner_headers = sign_in(client, owner)
    no_step_up = erase(client, owner_headers, scope="household")
    assert no_step_up.json()["code"] == "step_up_required"

    owner_headers = stepped_up(client, owner)
    r = erase(client, owner_headers, scope="household")
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    # Everyone in the home is signed out at once (C10).
    assert client.get(f"{API}/me", headers=owner_headers).status_code == 401

    assert container.erasure.run_pending().completed == 1
    after = client.post(f"{API}/auth/token", json={"email": owner, "password": PASSWORD})
    assert after.status_code == 401, after.text
    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is None
    assert item_ids(container, home.household_id) == set()
    assert list(container.vault.blobs.keys(f"{home.household_id}/")) == []
    assert item_ids(container, other.household_id) == {i for v in theirs.values() for i in v}
    # Nobody can sign in to ask for it any more: whoever holds the id fetches the receipt.
    document = client.get(f"{API}/receipts/{request_id}")
    assert document.status_code == 200
    assert receipts.verify(document.content, public_key(client))["scope"]["kind"] == "household"


def test_signing_in_to_a_household_being_closed_is_refused_like_a_wrong_password(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """Between the answer and the end of the job the account's rows still exist, its keys
    do not: the sign-in must be refused as any failed one is, not fail on a lost key."""
    owner = owner_email(home)
    assert erase(client, stepped_up(client, owner), scope="household").status_code == 202

    again = client.post(f"{API}/auth/token", json={"email": owner, "password": PASSWORD})
    wrong = client.post(f"{API}/auth/token", json={"email": owner, "password": "not it at all"})
    assert again.status_code == 401, again.text
    assert again.json()["code"] == wrong.json()["code"]


def test_another_households_ids_are_not_found(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    theirs = seed_media(container, other_home, voices=1, clips=0)
    headers = stepped_up(client, owner_email(home))

    item = erase(client, headers, scope="item", item_id=str(theirs["voice"][0]))
    assert item.status_code == 404
    profile = erase(client, headers, scope="profile", profile_id=str(other_home.child_profiles[0]))
    assert profile.status_code == 404
    assert profile.json()["code"] == item.json()["code"]
    assert readable(container, other_home.household_id, theirs["voice"][0])
    with container.stores.session() as s:
        assert s.scalars(select(ErasureRequest.id)).all() == []


def test_the_same_idempotency_key_answers_the_same_request(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    made = seed_media(container, home, voices=2, clips=0)
    headers = sign_in(client, owner_email(home))
    first = erase(client, headers, "retry-1", scope="item", item_id=str(made["voice"][0]))
    again = erase(client, headers, "retry-1", scope="item", item_id=str(made["voice"][0]))
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]

    other = erase(client, headers, "retry-1", scope="item", item_id=str(made["voice"][1]))
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert readable(container, home.household_id, made["voice"][1])
    with container.stores.session() as s:
        assert len(s.scalars(select(ErasureRequest.id)).all()) == 1


def test_a_retry_after_the_item_was_erased_gets_the_same_request(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """The key exists for the retry of a request whose answer was lost: the retry may
    come after the first request took effect, when the item no longer exists."""
    made = seed_media(container, home, voices=1, clips=0)
    headers = sign_in(client, owner_email(home))
    item = {"scope": "item", "item_id": str(made["voice"][0])}
    first = erase(client, headers, "lost-answer-item", **item)
    assert first.status_code == 202
    assert container.erasure.run_pending().completed == 1

    retried = erase(client, headers, "lost-answer-item", **item)
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == first.json()["id"]
    assert retried.json()["status"] == "completed"


def test_a_retry_of_a_profile_erasure_with_the_same_key_gets_the_same_request(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """From the first answer on the profile is hidden (under erasure): the retry with the
    same key must still be answered with the request it made, not 404."""
    profile = {"scope": "profile", "profile_id": str(home.child_profiles[0])}
    headers = stepped_up(client, owner_email(home))
    first = erase(client, headers, "lost-answer-profile", **profile)
    assert first.status_code == 202

    retried = erase(client, headers, "lost-answer-profile", **profile)
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == first.json()["id"]


def hold(container: Container, household_id: uuid.UUID, profile_id: uuid.UUID | None) -> None:
    """Add a legal hold to the retention policy in force, as an operator would in its file."""
    expires = (container.clock.now() + timedelta(days=180)).date().isoformat()
    profile = f'profile = "{profile_id}"\n' if profile_id else ""
    container._policy = parse_policy(
        default_policy_path().read_text()
        + f'\n[[hold]]\nid = "case-1"\nhousehold = "{household_id}"\n{profile}'
        f'reason = "Preservation request in case 1"\nexpires = {expires}\n'
    )


def test_a_legal_hold_on_the_household_suspends_erasure(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    made = seed_media(container, home, voices=1, clips=0)
    hold(container, home.household_id, None)
    headers = stepped_up(client, owner_email(home))

    for body in (
        {"scope": "item", "item_id": str(made["voice"][0])},
        {"scope": "profile", "profile_id": str(home.child_profiles[0])},
        {"scope": "household"},
    ):
        r = erase(client, headers, **body)
        assert r.status_code == 409, (body, r.text)
        assert r.json()["code"] == "legal_hold"
    assert readable(container, home.household_id, made["voice"][0])
    with container.stores.session() as s:
        assert s.scalars(select(ErasureRequest.id)).all() == []


def test_a_legal_hold_on_a_childs_profile_covers_its_items(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """An item belongs to a profile: a hold on the profile holds each of its items."""
    made = seed_media(container, home, voices=1, clips=0)
    hold(container, home.household_id, home.child_profiles[0])
    headers = sign_in(client, owner_email(home))

    r = erase(client, headers, scope="item", item_id=str(made["voice"][0]))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "legal_hold"
    assert readable(container, home.household_id, made["voice"][0])


def test_a_legal_hold_on_a_childs_profile_stops_the_household_closure(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """Closing the household would erase the held profile with everything else."""
    made = seed_media(container, home, voices=1, clips=0)
    hold(container, home.household_id, home.child_profiles[0])
    headers = stepped_up(client, owner_email(home))

    r = erase(client, headers, scope="household")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "legal_hold"
    assert readable(container, home.household_id, made["voice"][0])


class RacedEngine(ErasureEngine):
    """The engine, with another worker claiming each new job the moment it is recorded
    (an embedded worker or a `tutela worker` polling at that instant). That worker is
    slow between its first two steps: it goes on when told to, or after a few seconds."""

    def __init__(self, container: Container) -> None:
        super().__init__(container.stores, container.vault, container.settings, container.clock)
        self.claimed = threading.Event()
        self.resume = threading.Event()
        self.rival = ErasureEngine(
            container.stores,
            container.vault,
            container.settings,
            container.clock,
            worker_id="rival-worker",
            after_step=self._slow_after_mark,
        )
        self.threads: list[threading.Thread] = []

    def _slow_after_mark(self, _request_id: uuid.UUID, step: Step) -> None:
        if step is Step.MARK:
            self.claimed.set()
            self.resume.wait(timeout=3)

    def request(self, *args: Any, **kwargs: Any) -> ErasureRequest:
        row = super().request(*args, **kwargs)
        rival = threading.Thread(target=self.rival.run_request, args=(row.id,), daemon=True)
        rival.start()
        self.threads.append(rival)
        assert self.claimed.wait(timeout=10)
        return row


def test_the_answer_waits_for_the_keys_even_when_another_worker_holds_the_job(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """S6 as the API promises it: from the 202 on, the item is unreadable, whichever
    worker happens to hold the job."""
    made = seed_media(container, home, voices=1, clips=0)
    raced = RacedEngine(container)
    container.erasure = raced
    headers = sign_in(client, owner_email(home))
    try:
        r = erase(client, headers, scope="item", item_id=str(made["voice"][0]))
        assert r.status_code == 202, r.text
        assert not readable(container, home.household_id, made["voice"][0])
    finally:
        raced.resume.set()
        for thread in raced.threads:
            thread.join(timeout=10)


@pytest.fixture
def runner(container: Container, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI, pointed at the stores and the key file of `container`."""
    use_home(monkeypatch, container.settings.home)
    monkeypatch.setenv("TUTELA_DATABASE_URL", container.settings.main_url)
    monkeypatch.setenv("TUTELA_KEYSTORE_URL", container.settings.keys_url)
    return CliRunner()


def test_only_a_privacy_officer_with_a_fresh_second_factor_erases_for_a_customer(
    client: TestClient,
    container: Container,
    runner: CliRunner,
    home: CreatedHome,
    unique: str,
) -> None:
    made = seed_media(container, home, voices=1, clips=0)
    body = {"scope": "item", "household_id": str(home.household_id)}
    body["item_id"] = str(made["voice"][0])

    customer = client.post(
        f"{API}/staff/erasures", json=body, headers=sign_in(client, owner_email(home))
    )
    assert customer.status_code == 401
    assert customer.json()["code"] == "staff_session_required"

    # A support employee (authenticator app) has no say over customers' data.
    support_email = f"sue.{unique}@operator.example"
    initial = staff_add(runner, support_email, "support")
    enrolling = signed_in(sign_in_as(client, support_email, initial, staff=True), "enrol")
    totp, _ = add_totp(client, container, enrolling)
    change_password(client, enrolling, initial)
    started = sign_in_as(client, support_email, NEW_PASSWORD, staff=True)
    support = signed_in(
        second_factor(client, started.json()["challenge"], code=next_code(container, totp))
    )
    denied = client.post(f"{API}/staff/erasures", json=body, headers=support)
    assert denied.status_code == 403
    assert denied.json()["code"] == "privacy_officer_only"

    # A privacy officer (security key, R4), first without, then with a fresh step-up.
    officer_email = f"pia.{unique}@operator.example"
    initial = staff_add(runner, officer_email, "privacy_officer")
    enrolling = signed_in(sign_in_as(client, officer_email, initial, staff=True), "enrol")
    key = authenticator(container)
    add_security_key(client, key, enrolling)
    change_password(client, enrolling, initial)
    started = sign_in_as(client, officer_email, NEW_PASSWORD, staff=True)
    officer = signed_in(
        second_factor(client, started.json()["challenge"], webauthn=assertion(key, started))
    )
    # The second factor of the sign-in counts for a few minutes; then it is stale.
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    stale = client.post(f"{API}/staff/erasures", json=body, headers=officer)
    assert stale.status_code == 403
    assert stale.json()["code"] == "step_up_required"
    assert readable(container, home.household_id, made["voice"][0])

    options = client.post(f"{API}/auth/step-up/options", headers=officer)
    assert options.status_code == 200, options.text
    proof = key.get(json.dumps(options.json()["options"]))
    confirmed = client.post(
        f"{API}/auth/step-up",
        json={"webauthn": proof, "ceremony": options.json()["ceremony"]},
        headers=officer,
    )
    assert confirmed.status_code == 204, confirmed.text
    r = client.post(f"{API}/staff/erasures", json=body, headers=officer)
    assert r.status_code == 202, r.text
    assert r.json()["requested_by"] == "privacy_officer"
    assert not readable(container, home.household_id, made["voice"][0])
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        row = s.get(ErasureRequest, uuid.UUID(r.json()["id"]))
        assert row is not None and row.status == "completed"
        assert row.requested_by is not None and row.requested_by.startswith("staff:")
