"""The consent notice is generated from the purposes file, never written by hand (C3, C4),
and the notices of consent actions say what changed in the purposes' own words (C6)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from tutela.consent.notice import CHILDREN, as_json, build, render_html
from tutela.consent.purposes import default_purposes_path, load_purposes, parse_purposes
from tutela.identity.owners import Owner
from tutela.notices.service import NoticeKind, _check_params, render
from tutela.settings import Settings

EXTRA = """
[purpose.voice_match]
title = "Recognise <b>voices</b>"
description = "Tell family members apart by voice & answer each one."
adult_default = false
changed_in = 3
"""


def catalogue_v3() -> str:
    text = default_purposes_path().read_text().replace("notice_version = 1", "notice_version = 3")
    return text + EXTRA


def test_every_purpose_of_the_file_is_in_the_notice_with_its_defaults() -> None:
    catalogue = load_purposes()
    page = render_html(catalogue)
    body = as_json(catalogue)
    assert f"<h1>Consent notice, version {catalogue.notice_version}</h1>" in page
    assert body["notice_version"] == catalogue.notice_version
    for purpose in catalogue.purposes.values():
        assert purpose.title in page
        assert purpose.description in page
    by_name = {p["name"]: p for p in body["purposes"]}  # type: ignore[attr-defined]
    assert list(by_name) == catalogue.names
    assert by_name["storage"]["adults"] == "On unless you turn it off"
    for off in ("human_review", "model_training", "third_party_disclosure"):
        assert by_name[off]["adults"] == "Off unless you turn it on"
    # C3: every purpose needs a parent's verified consent for a child.
    assert body["children_need_parental_consent_for"] == catalogue.names
    assert page.count(f"<td>{CHILDREN.replace(chr(39), '&#x27;')}</td>") == len(catalogue.names)
    # C4: sharing is said to be asked for on its own.
    assert "Sharing with other companies: asked for on its own" in page


def test_the_notice_names_the_file_it_came_from() -> None:
    path = default_purposes_path()
    catalogue = load_purposes(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert catalogue.sha256 == digest
    assert f'<meta name="purposes-sha256" content="{digest}">' in render_html(catalogue)
    assert digest in as_json(catalogue)["about"][0]  # type: ignore[index]


def test_a_new_version_of_the_file_makes_a_new_notice_and_an_old_one_is_made_again() -> None:
    old, new = load_purposes(), parse_purposes(catalogue_v3(), source="purposes-v3.toml")
    assert render_html(old) == render_html(load_purposes())  # the same file, the same notice
    page = render_html(new)
    assert "<h1>Consent notice, version 3</h1>" in page
    assert "This is version 3." in page
    # An operator's own purpose is listed, escaped, with the version that last changed it.
    assert "Recognise &lt;b&gt;voices&lt;/b&gt;" in page
    assert "voice &amp; answer" in page
    assert "<b>" not in page
    assert '<tr id="voice_match">' in page and "<td>3</td>" in page
    assert "purposes-v3.toml" in build(new).about[0]
    assert render_html(old) != page


def _params(**extra: str) -> dict[str, str]:
    return {
        "at": datetime(2026, 5, 1, 9, 30, tzinfo=UTC).isoformat(),
        "profile": "Lily Marchetti",
        "who": "you",
        "notice": "1",
        "link": "http://localhost:8000/privacy/x/consent",
    } | extra


def test_a_consent_notice_says_what_was_turned_on_and_off() -> None:
    settings = Settings(environment="test")
    subject, body = render(
        NoticeKind.CONSENT_CHANGED,
        _params(on="Training our models", off="Keep recordings, Precise location"),
        settings,
    )
    assert subject == "Consent for a child in your Tutela home was changed"
    assert "the recordings of Lily Marchetti was changed." in body
    assert "  Turned on:  Training our models\n" in body
    assert "  Turned off: Keep recordings, Precise location\n" in body
    assert "  Changed by:     you\n" in body
    assert "  When:    2026-05-01 09:30 UTC" in body
    assert "/account/security" in body  # if it was not you


def test_a_consent_notice_refuses_a_version_that_is_not_a_number() -> None:
    owner = Owner.account(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    own = {"at": _params()["at"], "link": _params()["link"]}
    _check_params(NoticeKind.CONSENT_CHANGED_OWN, owner, own | {"notice": "2"})
    with pytest.raises(ValueError, match="notice's notice is not a number"):
        _check_params(NoticeKind.CONSENT_CHANGED_OWN, owner, own | {"notice": "2; drop"})
    with pytest.raises(ValueError, match="wrong parameters"):
        _check_params(NoticeKind.COLLECTION_REFUSED_OWN, owner, own | {"notice": "2"})
