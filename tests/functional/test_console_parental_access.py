"""Who may use the console's parental-consent page, and asking the other parent from it
(C3, C5): another household's child and an adult's profile are not found, a cross-site
POST is refused before anything is recorded, and an ask goes through the asks use case."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.functional.conftest import console_sign_in, owner_email
from tests.functional.test_console_parental import alert_of, page_url, post, tag_of
from tests.functional.test_parental_consent import attempts
from tests.mailbox import mail_to
from tutela.container import Container
from tutela.households.service import CreatedHome

pytestmark = pytest.mark.without_parental_consent

EVIL = {"origin": "https://evil.example"}


def test_another_households_child_and_an_adult_are_not_found(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    console_sign_in(client, owner_email(home))
    theirs = other_home.child_profiles[0]
    own = home.adult_profiles[owner_email(home)]
    for profile in (theirs, own):
        assert client.get(page_url(profile)).status_code == 404
        assert post(client, profile, "card_check", card_token="tok_ok").status_code == 404
    r = client.post(
        page_url(theirs) + "/ask", data={"email": "x@example.com"}, follow_redirects=False
    )
    assert r.status_code == 404
    assert attempts(container, home) == [] and attempts(container, other_home) == []


def test_a_cross_site_post_is_refused_and_records_nothing(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = post(client, child, "card_check", card_token="tok_ok", headers=EVIL)
    assert r.status_code == 403
    assert r.json()["code"] == "cross_site_request"
    r = client.post(
        page_url(child) + "/ask",
        data={"email": "parent.two@example.com"},
        headers=EVIL,
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert attempts(container, home) == []
    assert mail_to(container.settings.mail_path, "parent.two@example.com") == []


def test_the_other_parent_is_asked_by_email_from_the_page(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C5: the ask goes through the asks use case; the page says the address is dropped."""
    child = home.child_profiles[0]
    console_sign_in(client, owner_email(home))
    r = client.post(page_url(child) + "/ask", data={"email": "not an address"})
    assert r.status_code == 422
    assert "not an email address" in alert_of(r.text, "ask")
    assert 'aria-describedby="ask-error"' in tag_of(r.text, "ask-email")

    r = client.post(
        page_url(child) + "/ask",
        data={"email": "Parent.Two@Example.com"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == page_url(child) + "?done=asked#ask"
    page = client.get(r.headers["location"]).text
    assert "The email is on its way." in page and "parent.two" not in page.lower()
    [mail] = mail_to(container.settings.mail_path, "parent.two@example.com")
    assert f"/privacy/{child}/consent" in mail
