"""The console's consent page (C3, C4, C6, C7), through `create_app`, a signed-in browser
session (cookies) and the real stores: the purposes and their state in words, turning
them on and off under the notice version shown, sharing asked for alone, refusing all
recording after a confirmation, the history, and who may see which profile."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.factories import PASSWORD, grant_parental_consent, make_home
from tests.functional.conftest import console_sign_in, owner_email, sign_in
from tests.functional.test_sign_in_api import add_totp, next_code, wrong_code
from tutela.consent.purposes import default_purposes_path, parse_purposes
from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.households.service import CreatedHome

pytestmark = pytest.mark.without_parental_consent

EVIL = {"origin": "https://evil.example"}


def page_url(profile: uuid.UUID) -> str:
    return f"/privacy/{profile}/consent"


def state_of(page: str, purpose: str) -> str:
    """The state in words the page shows for a purpose."""
    found = re.search(
        rf'<fieldset class="purpose" id="purpose-{purpose}" data-state="([^"]*)"', page
    )
    assert found is not None, f"no fieldset for {purpose}"
    return html.unescape(found.group(1))


def form_of(page: str, form_id: str) -> str:
    found = re.search(rf'<form [^>]*id="{form_id}"[^>]*>(.*?)</form>', page, re.S)
    assert found is not None, f"no form {form_id}"
    return found.group(1)


def history_of(page: str) -> list[str]:
    """The history's lines as read, dates left out."""
    found = re.search(r'<ol class="history">(.*?)</ol>', page, re.S)
    if found is None:
        return []
    items = re.findall(r"<li>(.*?)</li>", found.group(1), re.S)
    return [re.sub(r"<time[^>]*>.*?</time>: ", "", i).strip() for i in items]


def api_state(client: TestClient, email: str, profile: uuid.UUID) -> dict[str, str]:
    r = client.get(f"/api/v1/profiles/{profile}/consent", headers=sign_in(client, email))
    assert r.status_code == 200, r.text
    return {p["purpose"]: p["reason"] for p in r.json()["purposes"]}


def api_history(client: TestClient, email: str, profile: uuid.UUID) -> list[dict[str, object]]:
    r = client.get(f"/api/v1/profiles/{profile}/consent/history", headers=sign_in(client, email))
    assert r.status_code == 200, r.text
    history: list[dict[str, object]] = r.json()
    return history


def post_choices(
    client: TestClient,
    profile: uuid.UUID,
    choices: dict[str, str],
    *,
    version: int = 1,
    **confirm: str,
) -> httpx.Response:
    """The consent form as posted; `password=` or `code=` confirms it is you (C7)."""
    data = {"notice_version": str(version)} | {f"purpose.{k}": v for k, v in choices.items()}
    return client.post(page_url(profile), data=data | confirm, follow_redirects=False)


def test_the_consent_page_needs_a_sign_in(client: TestClient, home: CreatedHome) -> None:
    r = client.get(page_url(home.child_profiles[0]), follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login"


def test_the_privacy_and_profile_pages_link_to_each_consent_page(
    client: TestClient, home: CreatedHome
) -> None:
    child, me = home.child_profiles[0], home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    privacy = client.get("/account/privacy").text
    assert f'href="/privacy/{child}/consent"' in privacy
    assert f'href="/privacy/{me}/consent"' in privacy
    assert 'href="/notices/consent"' in privacy
    assert f'href="/privacy/{child}/consent"' in client.get(f"/profiles/{child}").text


def test_an_adult_sees_each_purpose_in_words_and_sharing_in_a_form_of_its_own(
    client: TestClient, home: CreatedHome
) -> None:
    """C4: review, training and sharing are off by default; sharing is its own form."""
    me = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    page = client.get(page_url(me)).text
    assert "Your consent" in page
    assert state_of(page, "storage") == "On"
    assert "(the default, until you choose)" in page
    for purpose in ("human_review", "model_training", "third_party_disclosure"):
        assert state_of(page, purpose) == "Off"
    assert "Training our models" in page
    assert "Use recordings and transcripts to train the models" in page
    main = form_of(page, "consent-form")
    sharing = form_of(page, "consent-form-third_party_disclosure")
    assert "purpose.third_party_disclosure" not in main
    assert "purpose.model_training" in main
    assert (
        re.findall(r'name="(purpose\.[a-z_]+)"', sharing) == ["purpose.third_party_disclosure"] * 2
    )
    # The version shown is the version posted back.
    assert '<input type="hidden" name="notice_version" value="1">' in main
    assert '<label for="on-model_training">On</label>' in main
    assert "<legend>Training our models</legend>" in main
    assert "No choice has been made yet" in page


def test_a_parent_turns_training_on_and_off_and_the_history_shows_both(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    grant_parental_consent(container, home)
    console_sign_in(client, owner_email(home))

    r = post_choices(client, child, {"model_training": "on", "storage": "on"}, password=PASSWORD)
    assert r.status_code == 303
    assert r.headers["location"] == page_url(child) + "?done=saved"
    page = client.get(r.headers["location"]).text
    assert state_of(page, "model_training") == "On"
    assert "Each parent of Lily Marchetti is told of the change by email." in page
    assert api_state(client, owner_email(home), child)["model_training"] == "granted"

    clock.advance(timedelta(minutes=5))
    r = post_choices(client, child, {"model_training": "off", "storage": "on"})
    page = client.get(page_url(child)).text
    assert state_of(page, "model_training") == "Off"
    assert state_of(page, "storage") == "On"
    assert api_state(client, owner_email(home), child)["model_training"] == "withdrawn"
    lines = history_of(page)
    assert lines[:2] == [
        "You turned off Training our models, in the console, under notice version 1.",
        "You turned on Training our models, in the console, under notice version 1.",
    ]
    # The grants that rest on the verification are shown with how it was given (C3).
    assert "with a signed consent form" in lines[-1]
    # Only what changed was appended: storage, already on, was not granted again.
    events = api_history(client, owner_email(home), child)
    assert sum(1 for e in events if e["channel"] == "console" and e["method"] == "checkbox") == 2


def test_turning_on_training_asks_for_a_code_keeps_the_choice_then_records_it(
    client: TestClient, container: Container, clock: FakeClock, home: CreatedHome
) -> None:
    """C7: a session alone does not turn on what is off by default; the form asks for the
    authenticator code, keeps what was ticked, and records it once the code is right.
    Turning it off again asks for nothing."""
    child = home.child_profiles[0]
    grant_parental_consent(container, home)
    console_sign_in(client, owner_email(home))
    assert client.post("/account/step-up", data={"password": PASSWORD}).status_code == 200
    totp, _ = add_totp(client, container, {})
    clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    before = history_of(client.get(page_url(child)).text)

    asked = post_choices(client, child, {"model_training": "on", "storage": "on"})
    assert asked.status_code == 200
    form = form_of(asked.text, "consent-form")
    assert '<label for="consent-code">Authenticator or recovery code</label>' in form
    assert 'name="password"' not in form
    assert "Turning on Training our models needs you to confirm it is you" in form
    assert 'id="on-model_training" name="purpose.model_training" value="on" checked>' in form
    assert state_of(asked.text, "model_training").startswith("Off")
    assert 'role="alert"' not in asked.text
    assert history_of(client.get(page_url(child)).text) == before

    wrong = post_choices(client, child, {"model_training": "on"}, code=wrong_code(container, totp))
    assert wrong.status_code == 401
    assert 'role="alert"' in wrong.text
    assert 'id="consent-code"' in form_of(wrong.text, "consent-form")
    assert history_of(client.get(page_url(child)).text) == before

    done = post_choices(client, child, {"model_training": "on"}, code=next_code(container, totp))
    assert done.status_code == 303
    assert done.headers["location"] == page_url(child) + "?done=saved"
    page = client.get(page_url(child)).text
    assert state_of(page, "model_training") == "On"
    assert 'name="code"' not in page
    assert history_of(page)[0] == (
        "You turned on Training our models, in the console, under notice version 1."
    )

    clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    off = post_choices(client, child, {"model_training": "off"})
    assert off.status_code == 303
    assert state_of(client.get(page_url(child)).text, "model_training") == "Off"


def test_nothing_changed_appends_nothing(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    me = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    r = post_choices(client, me, {"storage": "on", "model_training": "off"})
    assert r.headers["location"] == page_url(me) + "?done=unchanged"
    assert "Nothing changed" in client.get(page_url(me) + "?done=unchanged").text
    assert api_history(client, owner_email(home), me) == []


def test_a_child_without_verified_consent_is_told_and_cannot_be_turned_on(
    client: TestClient, home: CreatedHome
) -> None:
    """C3: nothing for a child before a parent's consent is verified; the page says so."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    page = client.get(page_url(child)).text
    assert "A parent's consent is not verified yet" in page
    for purpose in ("storage", "model_training", "third_party_disclosure"):
        assert state_of(page, purpose) == "Off until a parent's consent is verified"
    assert 'id="consent-form"' not in page
    # The console's own verification page is where the parent goes next.
    assert f'<a href="/privacy/{child}/parental-consent">' in page
    assert "A parent verifies their consent in the Tutela app" not in page

    r = post_choices(client, child, {"storage": "on"})
    assert r.status_code == 403
    assert "must be verified" in r.text
    assert 'role="alert"' in r.text
    assert api_history(client, owner_email(home), child) == []


def test_a_stale_notice_version_is_refused_and_a_changed_purpose_is_asked_again(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C3: a grant counts only under the notice that was shown; a material change asks
    again."""
    me = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    assert post_choices(client, me, {"model_training": "on"}, password=PASSWORD).status_code == 303
    text = default_purposes_path().read_text().replace("notice_version = 1", "notice_version = 2")
    text = text.replace(
        'description = "Use recordings and transcripts to train the models that recognise '
        'speech and events."\nadult_default = false\nchanged_in = 1',
        'description = "Use recordings, transcripts and video to train models."\n'
        "adult_default = false\nchanged_in = 2",
    )
    container.consent.catalogue = parse_purposes(text)

    page = client.get(page_url(me)).text
    assert state_of(page, "model_training") == "Asked again: the notice changed"
    assert "consent notice version 2" in page

    r = post_choices(client, me, {"model_training": "on"}, version=1)
    assert r.status_code == 409
    assert "The consent notice has changed" in r.text
    r = post_choices(client, me, {"model_training": "on"}, version=2)
    assert r.status_code == 303
    page = client.get(page_url(me)).text
    assert state_of(page, "model_training") == "On"
    assert history_of(page)[0].endswith("under notice version 2.")


def test_sharing_posted_together_with_another_grant_is_refused(
    client: TestClient, home: CreatedHome
) -> None:
    """C4: never bundled, even from a form made by hand."""
    me = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    bundled = {"third_party_disclosure": "on", "model_training": "on"}
    r = post_choices(client, me, bundled, password=PASSWORD)
    assert r.status_code == 422
    assert "asked for on its own" in r.text
    assert api_history(client, owner_email(home), me) == []
    r = post_choices(client, me, {"third_party_disclosure": "on"})
    assert r.status_code == 303
    assert state_of(client.get(page_url(me)).text, "third_party_disclosure") == "On"


def test_a_made_up_choice_is_refused(client: TestClient, home: CreatedHome) -> None:
    me = home.adult_profiles[owner_email(home)]
    console_sign_in(client, owner_email(home))
    assert post_choices(client, me, {"model_training": "maybe"}).status_code == 422
    assert post_choices(client, me, {"astrology": "on"}).status_code == 422
    r = client.post(page_url(me), data={"purpose.model_training": "on"})
    assert r.status_code == 422
    assert api_history(client, owner_email(home), me) == []


def test_refusing_asks_for_confirmation_then_withdraws_everything(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C6: a parent can refuse further collection, after a confirmation step."""
    child = home.child_profiles[0]
    grant_parental_consent(container, home)
    console_sign_in(client, owner_email(home))
    page = client.get(page_url(child)).text
    assert f'href="/privacy/{child}/consent/refuse"' in page
    assert "Stop all recording for Lily Marchetti" in page

    confirm = client.get(page_url(child) + "/refuse")
    assert confirm.status_code == 200
    assert "Stop all recording for Lily Marchetti?" in confirm.text
    assert "Yes, stop all recording for Lily Marchetti" in confirm.text
    # A post without the confirmation only shows the confirmation again.
    r = client.post(page_url(child) + "/refuse", follow_redirects=False)
    assert r.status_code == 200
    assert "Yes, stop all recording for Lily Marchetti" in r.text
    assert api_state(client, owner_email(home), child)["storage"] == "granted"

    r = client.post(page_url(child) + "/refuse", data={"confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "All further recording of Lily Marchetti is stopped" in page
    assert set(api_state(client, owner_email(home), child).values()) == {"withdrawn"}
    assert history_of(page)[0] == (
        "You stopped all recording: every purpose turned off, in the console, under notice "
        "version 1."
    )


def test_another_households_or_adults_profile_is_not_found(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:

    two = make_home(container, tag=uuid.uuid4().hex[:8], second_adult=True, parental_consent=False)
    bruno = next(e for e in two.accounts if e.startswith("bruno."))
    console_sign_in(client, owner_email(home))
    theirs = other_home.child_profiles[0]
    for path in (page_url(theirs), page_url(theirs) + "/refuse"):
        assert client.get(path).status_code == 404
    assert post_choices(client, theirs, {"storage": "off"}).status_code == 404
    r = client.post(page_url(theirs) + "/refuse", data={"confirm": "yes"})
    assert r.status_code == 404
    # Living together is not consent: another adult's profile is not found either.
    client.cookies.clear()
    console_sign_in(client, owner_email(two))
    assert client.get(page_url(two.adult_profiles[bruno])).status_code == 404
    assert api_history(client, owner_email(other_home), theirs) == []


def test_a_cross_site_form_cannot_change_or_refuse(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    grant_parental_consent(container, home)
    console_sign_in(client, owner_email(home))
    before = api_history(client, owner_email(home), child)
    r = client.post(
        page_url(child),
        data={"notice_version": "1", "purpose.model_training": "on"},
        headers=EVIL,
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post(
        page_url(child) + "/refuse", data={"confirm": "yes"}, headers=EVIL, follow_redirects=False
    )
    assert r.status_code == 403
    assert api_history(client, owner_email(home), child) == before


def test_the_consent_notice_is_public_and_generated_from_the_purposes(
    client: TestClient, container: Container
) -> None:
    """C3: the notice is rendered from the purposes file, as HTML and as JSON."""
    page = client.get("/notices/consent")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    body = client.get("/api/v1/notices/consent").json()
    catalogue = container.consent.catalogue
    assert body["notice_version"] == catalogue.notice_version
    assert [p["name"] for p in body["purposes"]] == catalogue.names
    assert body["children_need_parental_consent_for"] == catalogue.names
    assert body["sha256"] == catalogue.sha256
    for purpose in catalogue.purposes.values():
        assert purpose.title in page.text
    assert f'<meta name="purposes-sha256" content="{catalogue.sha256}">' in page.text


def test_the_page_links_to_the_consoles_verification_page_once_there_is_one(
    client: TestClient, home: CreatedHome
) -> None:
    """C3: where a parent verifies consent, when the console has that page."""
    child = home.child_profiles[0]

    def verification_page() -> str:
        return "verify here"

    client.app.add_api_route(  # type: ignore[attr-defined]
        "/privacy/{profile_id}/parental-consent", verification_page
    )
    console_sign_in(client, owner_email(home))
    page = client.get(page_url(child)).text
    assert f'<a href="/privacy/{child}/parental-consent">' in page
    assert "A parent verifies their consent in the Tutela app" not in page
