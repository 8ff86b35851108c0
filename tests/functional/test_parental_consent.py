"""Verifiable parental consent through the API, as a parent gives it (C3, C4, C5, C7):
each method's success and failure with its evidence recorded and no secret in it, the
step-up it needs, the ID photo erased right after its check with a receipt, a parent
asked by email whose address expires, and disclosure never bundled."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from tests.factories import PASSWORD
from tests.functional.conftest import owner_email, sign_in, stored
from tutela.consent.models import ConsentEvent, ParentalConsent
from tutela.consent.parental import open_evidence
from tutela.consent.questions import BANK
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.core.errors import KeyUnavailable
from tutela.erasure import receipts
from tutela.households.service import CreatedHome
from tutela.retention.models import ConsentContact
from tutela.retention.sweep import run_sweep
from tutela.vault.models import MediaItem

pytestmark = pytest.mark.without_parental_consent

API = "/api/v1"
PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
ANSWERS = {q.id: q.answer for q in BANK}


def stepped_up(client: TestClient, email: str) -> dict[str, str]:
    headers = sign_in(client, email)
    r = client.post(f"{API}/auth/step-up", json={"password": PASSWORD}, headers=headers)
    assert r.status_code == 204, r.text
    return headers


def id_photo(birth_date: str) -> bytes:
    """A JPEG whose comment declares a birth date, as the fake ID checker reads it."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), (200, 200, 180)).save(
        buf, format="JPEG", comment=f"DOB={birth_date}".encode()
    )
    return buf.getvalue()


def give(
    client: TestClient,
    headers: dict[str, str],
    child: uuid.UUID,
    method: str,
    *,
    purposes: tuple[str, ...] = ("storage", "precise_geolocation"),
    document: tuple[str, bytes, str] | None = None,
    **fields: str,
) -> httpx.Response:
    data: dict[str, Any] = {"method": method, "notice_version": "1", "purposes": list(purposes)}
    data.update(fields)
    files = {"document": document} if document is not None else None
    return client.post(
        f"{API}/profiles/{child}/parental-consent", data=data, files=files, headers=headers
    )


def signed_form(container: Container) -> dict[str, str]:
    return {"typed_name": "Ana Marchetti", "signed_on": container.clock.now().date().isoformat()}


def attempts(container: Container, home: CreatedHome) -> list[ParentalConsent]:
    with container.stores.session() as s:
        return list(
            s.scalars(
                select(ParentalConsent)
                .where(ParentalConsent.household_id == home.household_id)
                .order_by(ParentalConsent.at, ParentalConsent.id)
            )
        )


def state(client: TestClient, headers: dict[str, str], profile: uuid.UUID) -> dict[str, Any]:
    r = client.get(f"{API}/profiles/{profile}/consent", headers=headers)
    assert r.status_code == 200, r.text
    return {p["purpose"]: (p["allowed"], p["reason"]) for p in r.json()["purposes"]}


def evidence_text(container: Container, consent: ParentalConsent) -> str:
    return json.dumps(open_evidence(container.vault, consent), sort_keys=True)


def test_a_signed_form_verifies_the_parent_and_the_grants_rest_on_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3: the grants follow a verified consent and name it; the evidence is the form's
    hash, the typed name and the date, never the form itself."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    assert state(client, headers, child)["storage"] == (False, "parental_consent_required")

    r = give(
        client,
        headers,
        child,
        "signed_form",
        purposes=("storage", "model_training"),
        document=("consent.pdf", PDF, "application/pdf"),
        **signed_form(container),
    )

    assert r.status_code == 201, r.text
    assert r.json()["verified"] is True and r.json()["method"] == "signed_form"
    now = state(client, headers, child)
    assert now["storage"] == (True, "granted")
    assert now["model_training"] == (True, "granted")
    assert now["precise_geolocation"] == (False, "parental_consent_required")
    [consent] = attempts(container, home)
    assert consent.verified and consent.method == "signed_form"
    evidence = open_evidence(container.vault, consent)
    assert evidence["typed_name"] == "Ana Marchetti"
    assert evidence["media_type"] == "application/pdf"
    assert len(evidence["sha256"]) == 64
    assert "%PDF" not in evidence_text(container, consent)
    assert b"Ana Marchetti" not in (consent.evidence_sealed or b"")  # sealed at rest
    with container.stores.session() as s:
        events = list(s.scalars(select(ConsentEvent).where(ConsentEvent.profile_id == child)))
    assert {(e.purpose, e.method, e.parental_consent_id) for e in events} == {
        ("storage", "signed_form", consent.id),
        ("model_training", "signed_form", consent.id),
    }
    listed = client.get(f"{API}/profiles/{child}/parental-consent", headers=headers).json()
    assert [(a["method"], a["verified"], a["by_you"]) for a in listed] == [
        ("signed_form", True, True)
    ]
    assert "evidence" not in listed[0]


def test_a_form_that_is_not_a_document_fails_and_the_failure_is_recorded(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    r = give(
        client,
        headers,
        child,
        "signed_form",
        document=("consent.txt", b"I agree", "text/plain"),
        **signed_form(container),
    )
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "parental_consent_not_verified"
    assert r.json()["reason"] == "not_a_form"
    assert r.json()["attempts_left"] == 4
    [failed] = attempts(container, home)
    assert failed.verified is False and failed.method == "signed_form"
    assert state(client, headers, child)["storage"] == (False, "parental_consent_required")


def test_a_card_check_keeps_the_providers_reference_and_last_four_never_the_token(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """312.5(b)(2)(ii): a zero-amount authorisation; evidence without card data."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    declined = give(client, headers, child, "card_check", card_token="tok_declined")
    assert declined.status_code == 403
    assert declined.json()["reason"] == "declined"

    r = give(client, headers, child, "card_check", card_token="tok_ok")
    assert r.status_code == 201, r.text
    failed, passed = attempts(container, home)
    assert (failed.verified, passed.verified) == (False, True)
    evidence = open_evidence(container.vault, passed)
    assert evidence["last4"] == "4242" and evidence["provider"] == "fake"
    assert evidence["reference"].startswith("fake_auth_")
    assert evidence["amount_cents"] == 0
    for consent in (failed, passed):
        assert "tok_" not in evidence_text(container, consent)
    assert state(client, headers, child)["precise_geolocation"] == (True, "granted")


def test_knowledge_questions_all_right_verify_and_the_answers_are_never_kept(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    asked = client.get(f"{API}/profiles/{child}/parental-consent/questions", headers=headers)
    assert asked.status_code == 200, asked.text
    ids = [q["id"] for q in asked.json()["questions"]]
    assert len(ids) == 3 and all(len(q["choices"]) == 4 for q in asked.json()["questions"])
    wrong = {qid: ANSWERS[qid] for qid in ids} | {ids[0]: "3 days"}
    r = give(
        client,
        headers,
        child,
        "knowledge_questions",
        challenge=asked.json()["challenge"],
        answers=json.dumps(wrong),
    )
    assert r.status_code == 403 and r.json()["reason"] == "wrong_answers"

    r = give(
        client,
        headers,
        child,
        "knowledge_questions",
        challenge=asked.json()["challenge"],
        answers=json.dumps({qid: ANSWERS[qid] for qid in ids}),
    )
    assert r.status_code == 201, r.text
    failed, passed = attempts(container, home)
    assert open_evidence(container.vault, passed)["question_ids"] == ids
    assert open_evidence(container.vault, failed)["right"] == 2
    for consent in (failed, passed):
        text = evidence_text(container, consent)
        assert not any(ANSWERS[qid] in text for qid in ids)


def test_questions_drawn_for_another_child_or_tampered_are_refused_as_input(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    challenge = client.get(
        f"{API}/profiles/{child}/parental-consent/questions", headers=headers
    ).json()["challenge"]
    head, mac = challenge.split(".")
    r = give(
        client,
        headers,
        child,
        "knowledge_questions",
        challenge=head + "." + mac[::-1],
        answers=json.dumps(ANSWERS),
    )
    assert r.status_code == 422 and r.json()["code"] == "questions_invalid"
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(minutes=16))
    r = give(
        client,
        headers,
        child,
        "knowledge_questions",
        challenge=challenge,
        answers=json.dumps(ANSWERS),
    )
    assert r.status_code in (403, 422)
    assert attempts(container, home) == []  # not an attempt: nothing recorded


def _snapshots(container: Container, profile: uuid.UUID) -> int:
    with container.stores.session() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(MediaItem).where(MediaItem.profile_id == profile)
            )
            or 0
        )


def test_an_id_photo_is_erased_right_after_its_check_with_a_signed_receipt(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3: a government ID used to verify a parent is deleted right after; the evidence
    keeps the erasure request, whose receipt proves it, never the image."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    guardian_profile = home.adult_profiles[owner_email(home)]
    photo = id_photo("1984-06-02")

    r = give(client, headers, child, "id_check", document=("id.jpg", photo, "image/jpeg"))

    assert r.status_code == 201, r.text
    [consent] = attempts(container, home)
    evidence = open_evidence(container.vault, consent)
    assert evidence["result"] == "passed" and evidence["checker"] == "fake"
    request_id = evidence["image_erasure_request_id"]
    assert "DOB" not in evidence_text(container, consent)
    with container.stores.session() as s:
        item = s.scalar(select(MediaItem).where(MediaItem.profile_id == guardian_profile))
    # Before the answer the photo's key was destroyed: unreadable at once (S6); the
    # worker then removes the blob and the row and checks nothing is left.
    assert item is not None and item.kind == "snapshot" and item.device_id is None
    with pytest.raises(KeyUnavailable):
        container.vault.keys.item_key(household_id=home.household_id, item_id=item.id)
    assert container.erasure.run_pending().completed == 1
    assert _snapshots(container, guardian_profile) == 0
    assert stored(container).blobs == 0 and stored(container).keys == 0
    receipt = client.get(f"{API}/receipts/{request_id}")
    assert receipt.status_code == 200, receipt.text
    public_key = receipts.load_public_key(client.get(f"{API}/receipts/public-key").content)
    body = receipts.verify(receipt.content, public_key)
    assert body["counts"] == {"snapshot": 1}
    assert body["remnant_check"]["result"] == "clean"
    assert state(client, headers, child)["storage"] == (True, "granted")


def test_a_childs_id_fails_and_is_erased_all_the_same(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    r = give(
        client,
        headers,
        child,
        "id_check",
        document=("id.jpg", id_photo("2015-01-01"), "image/jpeg"),
    )
    assert r.status_code == 403 and r.json()["reason"] == "not_an_adult"
    [failed] = attempts(container, home)
    request_id = open_evidence(container.vault, failed)["image_erasure_request_id"]
    container.erasure.run_pending()
    assert _snapshots(container, home.adult_profiles[owner_email(home)]) == 0
    assert stored(container).blobs == 0
    assert client.get(f"{API}/receipts/{request_id}").status_code == 200


def test_consent_needs_a_fresh_step_up_and_nothing_is_recorded_without_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C7: the requester re-confirms it is them, without more burden than that."""
    headers = sign_in(client, owner_email(home))
    r = give(client, headers, home.child_profiles[0], "card_check", card_token="tok_ok")
    assert r.status_code == 403 and r.json()["code"] == "step_up_required"
    assert attempts(container, home) == []


def test_another_households_child_is_not_found_and_an_adult_is_no_child(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    r = give(client, headers, other_home.child_profiles[0], "card_check", card_token="tok_ok")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    own = home.adult_profiles[owner_email(home)]
    r = give(client, headers, own, "card_check", card_token="tok_ok")
    assert r.status_code == 422 and r.json()["code"] == "not_a_child_profile"
    ask = client.post(
        f"{API}/profiles/{other_home.child_profiles[0]}/parental-consent/ask",
        json={"email": "someone@example.com"},
        headers=headers,
    )
    assert ask.status_code == 404
    assert attempts(container, home) == [] and attempts(container, other_home) == []


def test_failed_attempts_are_limited_per_child_and_day(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    for left in (4, 3, 2, 1, 0):
        r = give(client, headers, child, "card_check", card_token="tok_declined")
        assert r.status_code == 403 and r.json()["attempts_left"] == left
    r = give(client, headers, child, "card_check", card_token="tok_ok")
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "parental_consent_attempts"
    assert int(r.headers["retry-after"]) > 0
    assert len(attempts(container, home)) == 5
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(days=1, seconds=1))
    headers = stepped_up(client, owner_email(home))
    assert give(client, headers, child, "card_check", card_token="tok_ok").status_code == 201


def test_disclosure_is_never_bundled_and_stays_off_until_granted_on_its_own(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C4: sharing with other companies is never part of the verification step; it is
    off until the guardian grants it alone, afterwards."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    for purposes in (("storage", "third_party_disclosure"), ("third_party_disclosure",)):
        r = give(client, headers, child, "card_check", purposes=purposes, card_token="tok_ok")
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "consent_bundled"
    assert attempts(container, home) == []  # refused before anything was verified

    assert give(client, headers, child, "card_check", card_token="tok_ok").status_code == 201
    assert state(client, headers, child)["third_party_disclosure"] == (
        False,
        "parental_consent_required",
    )
    r = client.post(
        f"{API}/profiles/{child}/consent",
        json={"notice_version": 1, "changes": {"third_party_disclosure": True}},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert state(client, headers, child)["third_party_disclosure"] == (True, "granted")


def _mail_to(container: Container, address: str) -> list[str]:
    parser = BytesParser(policy=policy.default)
    found = []
    for path in sorted(container.settings.mail_path.glob("*.eml")):
        message = parser.parsebytes(path.read_bytes())
        if address in {a.lower() for _, a in getaddresses(message.get_all("To", []))}:
            found.append(str(message.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    return found


def _contacts(container: Container, home: CreatedHome) -> list[ConsentContact]:
    with container.stores.session() as s:
        return list(
            s.scalars(
                select(ConsentContact).where(ConsentContact.household_id == home.household_id)
            )
        )


def test_a_parent_asked_by_email_gets_a_link_and_the_address_is_dropped_on_consent(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C5: the address is held sealed only to ask; once consent is verified it is wiped."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    r = client.post(
        f"{API}/profiles/{child}/parental-consent/ask",
        json={"email": "Parent.Two@Example.com"},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    expires = r.json()["expires_at"]
    [contact] = _contacts(container, home)
    assert contact.child_profile_id == child and contact.consented_at is None
    assert b"parent.two" not in contact.contact_sealed.lower()
    assert str(contact.id) == r.json()["contact_id"] and expires
    [mail] = _mail_to(container, "parent.two@example.com")
    assert f"/privacy/{child}/consent" in mail
    assert "Lily" not in mail  # the child is not named to an address nobody verified

    assert give(client, headers, child, "card_check", card_token="tok_ok").status_code == 201
    [answered] = _contacts(container, home)
    assert answered.consented_at is not None and answered.contact_sealed == b""


def test_an_unanswered_ask_is_deleted_by_the_retention_sweep(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C5: contact data collected only to ask for consent expires when none comes."""
    headers = sign_in(client, owner_email(home))
    child = home.child_profiles[0]
    for n in range(3):
        r = client.post(
            f"{API}/profiles/{child}/parental-consent/ask",
            json={"email": f"parent{n}@example.com"},
            headers=headers,
        )
        assert r.status_code == 202, r.text
    r = client.post(
        f"{API}/profiles/{child}/parental-consent/ask",
        json={"email": "parent9@example.com"},
        headers=headers,
    )
    assert r.status_code == 429 and r.json()["code"] == "consent_asks_exhausted"
    assert len(_contacts(container, home)) == 3

    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(days=29))
    assert run_sweep(container).consent_contacts_expired == 0
    container.clock.advance(timedelta(days=2))
    assert run_sweep(container).consent_contacts_expired == 3
    assert _contacts(container, home) == []


def test_an_answered_ask_is_kept_by_the_sweep_without_its_address(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    client.post(
        f"{API}/profiles/{child}/parental-consent/ask",
        json={"email": "parent@example.com"},
        headers=headers,
    )
    assert give(client, headers, child, "card_check", card_token="tok_ok").status_code == 201
    assert isinstance(container.clock, FakeClock)
    container.clock.advance(timedelta(days=40))
    assert run_sweep(container).consent_contacts_expired == 0
    [kept] = _contacts(container, home)
    assert kept.contact_sealed == b""


def test_erasing_the_child_takes_its_asks_parental_consents_and_grants_with_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C5, C6: the contact, the evidence and the grants are the child's and go with the
    child; the remnant check (raw SQLite files included) finds none of them."""
    headers = stepped_up(client, owner_email(home))
    child = home.child_profiles[0]
    r = client.post(
        f"{API}/profiles/{child}/parental-consent/ask",
        json={"email": "parent@example.com"},
        headers=headers,
    )
    assert r.status_code == 202
    declined = give(client, headers, child, "card_check", card_token="tok_declined")
    assert declined.status_code == 403
    assert give(client, headers, child, "card_check", card_token="tok_ok").status_code == 201
    r = client.post(
        f"{API}/erasures", json={"scope": "profile", "profile_id": str(child)}, headers=headers
    )
    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    status = client.get(f"{API}/erasures/{r.json()['id']}", headers=headers).json()
    assert status["status"] == "completed"
    assert _contacts(container, home) == [] and attempts(container, home) == []
    with container.stores.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(ConsentEvent)
                .where(ConsentEvent.profile_id == child)
            )
            == 0
        )
