"""Every consent action reaches the mailbox (C6): each guardian of a child is told of a
change or a refusal made in the console or the API, an adult is sent a confirmation of
their own change, and a refused change tells nobody. Read from the `.eml` files the
outbox delivers after the answer."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import PASSWORD, grant_parental_consent
from tests.functional.conftest import console_sign_in, sign_in
from tests.integration.test_erasure_notices import CHILD, adult, two_guardians
from tests.mailbox import mail_to
from tutela.container import Container
from tutela.notices.models import OutboxMessage

pytestmark = pytest.mark.without_parental_consent

CHANGED = "Consent for a child in your Tutela home was changed"
STOPPED = "Recording of a child in your Tutela home was stopped"
OWN = "Your Tutela consent choices were changed"
OWN_STOPPED = "You stopped all recording of you in Tutela"


def outbox_kinds(container: Container, household_id: uuid.UUID) -> list[tuple[str, object]]:
    with container.stores.session() as s:
        rows = s.scalars(
            select(OutboxMessage).where(
                OutboxMessage.household_id == household_id,
                OutboxMessage.kind.like("con%") | OutboxMessage.kind.like("col%"),
            )
        ).all()
        return [(r.kind, r.about_profile_id) for r in rows]


def test_each_guardian_is_told_of_a_change_made_in_the_console(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique, parental_consent=False)
    (ana, _), (bruno, _) = adult(home, "ana"), adult(home, "bruno")
    child = home.child_profiles[0]
    grant_parental_consent(container, home)
    console_sign_in(client, ana)

    r = client.post(
        f"/privacy/{child}/consent",
        data={
            "notice_version": "1",
            "purpose.model_training": "on",
            "purpose.storage": "off",
            "password": PASSWORD,  # turning on training needs a step-up (C7)
        },
        follow_redirects=False,
    )

    assert r.status_code == 303
    mail = container.settings.mail_path
    (to_ana,) = mail_to(mail, ana, subject=CHANGED)
    (to_bruno,) = mail_to(mail, bruno, subject=CHANGED)
    for text in (to_ana, to_bruno):
        assert f"What Tutela may do with the recordings of {CHILD} was changed." in text
        assert "Turned on:  Training our models" in text
        assert "Turned off: Keep recordings" in text
        assert "Notice version: 1" in text
        assert f"/privacy/{child}/consent" in text
    assert "Changed by:     you" in to_ana
    assert "Changed by:     Ana Marchetti" in to_bruno
    # Sealed under the child's key, it is erased with the child's profile (A5).
    assert {about for _, about in outbox_kinds(container, home.household_id)} == {child}


def test_each_guardian_is_told_when_recording_is_stopped_through_the_api(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique, parental_consent=False)
    (ana, _), (bruno, _) = adult(home, "ana"), adult(home, "bruno")
    child = home.child_profiles[0]
    grant_parental_consent(container, home)

    r = client.post(f"/api/v1/profiles/{child}/consent/refuse", headers=sign_in(client, bruno))

    assert r.status_code == 200
    mail = container.settings.mail_path
    (to_ana,) = mail_to(mail, ana, subject=STOPPED)
    (to_bruno,) = mail_to(mail, bruno, subject=STOPPED)
    for text in (to_ana, to_bruno):
        assert f"All further recording and use of {CHILD}'s information was refused" in text
    assert "Stopped by: Bruno Marchetti" in to_ana
    assert "Stopped by: you" in to_bruno


def test_an_adult_is_sent_a_confirmation_of_their_own_change_and_nobody_else_is(
    client: TestClient, container: Container, unique: str
) -> None:
    home = two_guardians(container, unique, parental_consent=False)
    (ana, _), (bruno, _) = adult(home, "ana"), adult(home, "bruno")
    own = home.adult_profiles[ana]
    auth = sign_in(client, ana)
    # Turning on human review needs a step-up (C7).
    r = client.post("/api/v1/auth/step-up", json={"password": PASSWORD}, headers=auth)
    assert r.status_code == 204, r.text

    r = client.post(
        f"/api/v1/profiles/{own}/consent",
        json={"notice_version": 1, "changes": {"human_review": True}},
        headers=auth,
    )
    assert r.status_code == 200
    r = client.post(f"/api/v1/profiles/{own}/consent/refuse", headers=sign_in(client, ana))
    assert r.status_code == 200

    mail = container.settings.mail_path
    (confirmation,) = mail_to(mail, ana, subject=OWN)
    assert "What Tutela may do with your recordings was changed." in confirmation
    assert "Turned on:  Human review" in confirmation
    assert "Turned off" not in confirmation
    (stopped,) = mail_to(mail, ana, subject=OWN_STOPPED)
    assert "All further recording and use of your information was refused" in stopped
    assert mail_to(mail, bruno, subject=OWN) == []
    assert mail_to(mail, bruno, subject=OWN_STOPPED) == []


def test_a_refused_change_tells_nobody(
    client: TestClient, container: Container, unique: str
) -> None:
    """A grant for a child without a parent's verified consent is refused whole: no
    event, no notice (the notice is queued in the change's own transaction)."""
    home = two_guardians(container, unique, parental_consent=False)
    (ana, _), (bruno, _) = adult(home, "ana"), adult(home, "bruno")
    child = home.child_profiles[0]

    r = client.post(
        f"/api/v1/profiles/{child}/consent",
        json={"notice_version": 1, "changes": {"storage": True}},
        headers=sign_in(client, ana),
    )

    assert r.status_code == 403
    assert outbox_kinds(container, home.household_id) == []
    for email in (ana, bruno):
        assert mail_to(container.settings.mail_path, email, subject=CHANGED) == []
