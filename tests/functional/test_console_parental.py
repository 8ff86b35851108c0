"""The console's parental-consent page (C3, C4, C7), through `create_app`, a signed-in
browser session (cookies) and the real stores: why Tutela asks, the attempts so far, the
four methods as forms of their own with nothing ticked and sharing never offered, each
method succeeding or failing with its reason and the attempts left, step-up asked in the
form when the session has none, and the ID photo erased after the check. Who may see the
page, and asking the other parent from it: `test_console_parental_access.py`."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import PASSWORD
from tests.functional.conftest import console_sign_in, owner_email, stored
from tests.functional.test_parental_consent import PDF, attempts, id_photo
from tutela.consent.models import ConsentEvent
from tutela.consent.parental import open_evidence
from tutela.consent.questions import BANK
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome
from tutela.vault.models import MediaItem

pytestmark = pytest.mark.without_parental_consent

ANSWERS = {q.id: q.answer for q in BANK}
METHODS = ("signed_form", "card_check", "knowledge_questions", "id_check")


def page_url(child: uuid.UUID) -> str:
    return f"/privacy/{child}/parental-consent"


def form_of(page: str, form_id: str) -> str:
    found = re.search(rf'<form [^>]*id="{form_id}"[^>]*>(.*?)</form>', page, re.S)
    assert found is not None, f"no form {form_id}"
    return found.group(1)


def tag_of(page: str, element_id: str) -> str:
    """The opening tag of the element with `element_id`."""
    found = re.search(rf'<[a-z]+ [^>]*id="{element_id}"[^>]*>', page)
    assert found is not None, f"no element {element_id}"
    return found.group(0)


def alert_of(page: str, form: str) -> str:
    found = re.search(rf'<p class="error" role="alert" id="{form}-error">(.*?)</p>', page, re.S)
    assert found is not None, f"no error shown for {form}"
    return html.unescape(found.group(1))


def post(
    client: TestClient,
    child: uuid.UUID,
    method: str,
    *,
    purposes: tuple[str, ...] = ("storage",),
    document: tuple[str, bytes, str] | None = None,
    password: str | None = PASSWORD,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    data: dict[str, str | list[str]] = {
        "method": method,
        "notice_version": "1",
        "purpose": list(purposes),
        **fields,
    }
    if password is not None:
        data["password"] = password
    return client.post(
        page_url(child),
        data=data,
        # A browser sends the file field of a multipart form even when it is left empty.
        files={"document": document or ("", b"", "application/octet-stream")},
        headers=headers,
        follow_redirects=False,
    )


def today(container: Container) -> str:
    return container.clock.now().date().isoformat()


def test_the_page_says_why_and_offers_four_forms_with_nothing_ticked_and_no_sharing(
    client: TestClient, home: CreatedHome
) -> None:
    """C3: why Tutela asks, in plain words; C4: no purpose ticked for the parent, and
    sharing with other companies is never one of them (it has its own form elsewhere)."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    consent = client.get(f"/privacy/{child}/consent").text
    assert f'<a href="{page_url(child)}">' in consent

    r = client.get(page_url(child))
    assert r.status_code == 200
    page = r.text
    assert "Why Tutela asks" in page and "COPPA" in page
    assert "No parent has been checked for Lily Marchetti yet." in page
    for method in METHODS:
        form = form_of(page, f"form-{method}")
        assert f'name="method" value="{method}"' in form
        assert 'name="purpose"' in form
        assert " checked" not in form
        assert 'value="third_party_disclosure"' not in form
        assert "<legend>What you allow for Lily Marchetti</legend>" in form
        assert f'href="/privacy/{child}/consent#separate-third_party_disclosure"' in form
        # Every input has its label.
        for input_id in re.findall(r'<input [^>]*id="([^"]+)"', form):
            assert f'<label for="{input_id}">' in form, input_id
    assert 'enctype="multipart/form-data" class="stack" id="form-signed_form"' in page
    assert "<code>tok_ok</code>" in page
    assert "the photo is erased right after the check" in page
    assert "a signed receipt of the photo's deletion" in page
    questions = re.findall(r'name="answer\.([a-z-]+)"', form_of(page, "form-knowledge_questions"))
    assert len(set(questions)) == 3
    assert 'id="form-ask"' in page


def test_a_signed_form_sent_from_the_console_verifies_and_lands_on_the_consent_page(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3, C7: the same use case as the API's, with the password as step-up (this account
    has no second factor); the grants are the ones ticked, and came from the console."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = post(
        client,
        child,
        "signed_form",
        purposes=("storage", "model_training"),
        document=("consent.pdf", PDF, "application/pdf"),
        typed_name="Ana Marchetti",
        signed_on=today(container),
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/privacy/{child}/consent?done=verified"
    consent = client.get(r.headers["location"]).text
    assert "Your consent as Lily Marchetti's parent is verified" in consent
    assert 'data-state="On"' in tag_of(consent, "purpose-storage")
    assert 'data-state="On"' in tag_of(consent, "purpose-model_training")
    assert "Off until a parent" in tag_of(consent, "purpose-precise_geolocation")

    [consent_row] = attempts(container, home)
    assert consent_row.verified and consent_row.method == "signed_form"
    with container.stores.session() as s:
        events = list(s.scalars(select(ConsentEvent).where(ConsentEvent.profile_id == child)))
    assert {(e.purpose, e.channel, e.parental_consent_id) for e in events} == {
        ("storage", "console", consent_row.id),
        ("model_training", "console", consent_row.id),
    }
    page = client.get(page_url(child)).text
    assert "Signed consent form, <strong>verified</strong>, by you." in page
    assert "%PDF" not in page and "sha256" not in page  # never the evidence


def test_a_declined_card_says_why_and_how_many_attempts_are_left_then_a_good_one_passes(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = post(client, child, "card_check", card_token="tok_declined")
    assert r.status_code == 403
    assert alert_of(r.text, "card_check") == "The card was declined. Attempts left today: 4."
    field = tag_of(r.text, "card_check-card_token")
    assert 'aria-describedby="card_check-card_token-hint card_check-error"' in field
    assert 'aria-invalid="true"' in field
    assert "Payment card check, <strong>not verified</strong>, by you." in r.text
    assert 'value="tok_declined"' not in r.text  # the token is asked for again

    r = post(client, child, "card_check", card_token="tok_ok", password=None)
    assert r.status_code == 303, r.text  # the step-up a moment ago is still fresh
    failed, passed = attempts(container, home)
    assert (failed.verified, passed.verified) == (False, True)
    assert open_evidence(container.vault, passed)["last4"] == "4242"


def test_knowledge_questions_drawn_on_the_page_verify_when_all_are_right(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    form = form_of(client.get(page_url(child)).text, "form-knowledge_questions")
    challenge = html.unescape(re.findall(r'name="challenge" value="([^"]+)"', form)[0])
    ids = list(dict.fromkeys(re.findall(r'name="answer\.([a-z-]+)"', form)))
    wrong = {f"answer.{q}": ANSWERS[q] for q in ids} | {f"answer.{ids[0]}": "none of these"}

    r = post(client, child, "knowledge_questions", challenge=challenge, **wrong)
    assert r.status_code == 403
    assert alert_of(r.text, "knowledge_questions").startswith("Not every answer was right.")
    assert "Attempts left today: 4." in alert_of(r.text, "knowledge_questions")
    assert 'aria-describedby="knowledge_questions-error"' in tag_of(
        r.text, "knowledge_questions-questions"
    )
    again = form_of(r.text, "form-knowledge_questions")
    fresh = html.unescape(re.findall(r'name="challenge" value="([^"]+)"', again)[0])
    assert fresh != challenge  # new questions after wrong answers
    ids = list(dict.fromkeys(re.findall(r'name="answer\.([a-z-]+)"', again)))

    right = {f"answer.{q}": ANSWERS[q] for q in ids}
    r = post(client, child, "knowledge_questions", challenge=fresh, **right)
    assert r.status_code == 303, r.text
    _, passed = attempts(container, home)
    assert passed.verified and open_evidence(container.vault, passed)["question_ids"] == ids


def test_an_id_photo_sent_from_the_console_is_erased_after_the_check(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3: the ID photo is erased right after its check; after the worker's pass no blob
    and no key of it is left, and the receipt is there."""
    child = home.child_profiles[0]
    guardian = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    r = post(
        client,
        child,
        "id_check",
        purposes=("storage", "precise_geolocation"),
        document=("id.jpg", id_photo("1984-06-02"), "image/jpeg"),
    )
    assert r.status_code == 303, r.text
    [consent] = attempts(container, home)
    request_id = open_evidence(container.vault, consent)["image_erasure_request_id"]
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        assert s.scalar(select(MediaItem).where(MediaItem.profile_id == guardian)) is None
    assert stored(container).blobs == 0 and stored(container).keys == 0
    assert client.get(f"/api/v1/receipts/{request_id}").status_code == 200


def test_a_childs_id_fails_with_its_reason_and_is_erased_all_the_same(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = post(client, child, "id_check", document=("id.jpg", id_photo("2015-01-01"), "image/jpeg"))
    assert r.status_code == 403
    assert alert_of(r.text, "id_check") == "The ID does not show an adult. Attempts left today: 4."
    assert 'aria-describedby="id_check-error"' in tag_of(r.text, "id_check-document")
    container.erasure.run_pending()
    assert stored(container).blobs == 0 and stored(container).keys == 0


def test_without_a_fresh_step_up_the_form_asks_for_it_and_keeps_what_was_typed(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C7: the page asks for the password (no second factor here) in the form itself; a
    form sent without it, or with a wrong one, records nothing and comes back filled in."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    page = client.get(page_url(child)).text
    assert '<label for="signed_form-password">Your password</label>' in form_of(
        page, "form-signed_form"
    )
    for password in (None, "not the password at all"):
        r = post(
            client,
            child,
            "signed_form",
            purposes=("storage", "human_review"),
            document=("consent.pdf", PDF, "application/pdf"),
            typed_name="Ana Marchetti",
            signed_on=today(container),
            password=password,
        )
        assert r.status_code in (401, 403), r.text
        message = alert_of(r.text, "signed_form")
        assert message.endswith("Nothing was recorded; choose the file again.")
        assert 'aria-describedby="signed_form-error"' in tag_of(r.text, "signed_form-password")
        form = form_of(r.text, "form-signed_form")
        assert 'value="Ana Marchetti"' in form
        assert re.search(r'value="storage" id="signed_form-purpose-storage"[^>]* checked', form)
        assert re.search(r'value="human_review" id="[^"]+"[^>]* checked', form)
        assert not re.search(r'value="model_training" id="[^"]+"[^>]* checked', form)
    assert attempts(container, home) == []

    clock = container.clock
    assert isinstance(clock, FakeClock)
    r = post(client, child, "card_check", card_token="tok_ok")  # steps up
    assert r.status_code == 303
    clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    r = post(client, child, "card_check", card_token="tok_ok", password=None)
    assert r.status_code == 403
    assert alert_of(r.text, "card_check").startswith("Confirm it is you first")


def test_choosing_nothing_is_refused_on_the_purposes_group(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = post(client, child, "card_check", purposes=(), card_token="tok_ok")
    assert r.status_code == 422
    assert alert_of(r.text, "card_check") == "Choose at least one purpose. Nothing was recorded."
    assert "card_check-error" in tag_of(r.text, "card_check-purposes")
    r = post(client, child, "card_check", purposes=("third_party_disclosure",), card_token="tok_ok")
    assert r.status_code == 422 and "never in the same step" in alert_of(r.text, "card_check")
    assert attempts(container, home) == []


def test_too_many_failures_in_a_day_are_refused_with_a_wait(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    for _ in range(5):
        r = post(client, child, "card_check", card_token="tok_declined")
    assert alert_of(r.text, "card_check").endswith(
        "No attempts are left today: try again tomorrow."
    )
    r = post(client, child, "card_check", card_token="tok_ok")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert "Too many failed attempts" in alert_of(r.text, "card_check")


def test_answers_sent_without_a_step_up_come_back_with_the_same_questions_ticked(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C7: the step-up asked for does not cost the parent their answers."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    form = form_of(client.get(page_url(child)).text, "form-knowledge_questions")
    challenge = html.unescape(re.findall(r'name="challenge" value="([^"]+)"', form)[0])
    ids = list(dict.fromkeys(re.findall(r'name="answer\.([a-z-]+)"', form)))
    right = {f"answer.{q}": ANSWERS[q] for q in ids}

    r = post(client, child, "knowledge_questions", challenge=challenge, password=None, **right)
    assert r.status_code == 403
    assert alert_of(r.text, "knowledge_questions") == (
        "Confirm it is you first, below. Nothing was recorded."
    )
    again = form_of(r.text, "form-knowledge_questions")
    assert html.unescape(re.findall(r'name="challenge" value="([^"]+)"', again)[0]) == challenge
    for q in ids:
        ticked = re.search(rf'name="answer\.{q}" value="([^"]+)"[^>]* checked', again)
        assert ticked is not None and html.unescape(ticked.group(1)) == ANSWERS[q]
    assert attempts(container, home) == []

    r = post(client, child, "knowledge_questions", challenge=challenge, **right)
    assert r.status_code == 303, r.text
