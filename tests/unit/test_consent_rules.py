"""The consent rules on their own: derived decisions and the purposes file (C3, C4)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tutela.consent.ledger import Latest, Reason, derive
from tutela.consent.purposes import (
    PurposesError,
    default_purposes_path,
    load_purposes,
    parse_purposes,
)

AT = datetime(2026, 12, 1, tzinfo=UTC)
CATALOGUE = load_purposes()


def test_a_child_has_no_defaults_even_where_adults_do() -> None:
    """C3: nothing is done with a child's data before a parent's verified consent."""
    storage = CATALOGUE["storage"]
    assert derive(False, storage, None).reason is Reason.DEFAULT_ON
    decision = derive(True, storage, None)
    assert not decision.allowed
    assert decision.reason is Reason.PARENTAL_CONSENT_REQUIRED


@pytest.mark.parametrize("purpose", ["human_review", "model_training", "third_party_disclosure"])
def test_review_training_and_disclosure_are_off_until_asked(purpose: str) -> None:
    """C4: off by default for adults too."""
    decision = derive(False, CATALOGUE[purpose], None)
    assert (decision.allowed, decision.reason) == (False, Reason.NOT_GRANTED)


def test_the_latest_event_decides_and_a_withdrawal_is_final() -> None:
    p = CATALOGUE["model_training"]
    assert derive(False, p, Latest(True, 1, AT)).allowed
    withdrawn = derive(False, p, Latest(False, 1, AT))
    assert (withdrawn.allowed, withdrawn.reason) == (False, Reason.WITHDRAWN)


def test_a_grant_under_an_older_notice_no_longer_counts_after_a_material_change() -> None:
    """C3: a new notice version that changes a purpose asks for fresh consent."""
    changed = parse_purposes(_purposes_text(notice_version=3, review_changed_in=3))
    review = changed["human_review"]
    stale = derive(False, review, Latest(True, 2, AT))
    assert (stale.allowed, stale.reason) == (False, Reason.FRESH_CONSENT_NEEDED)
    assert derive(False, review, Latest(True, 3, AT)).allowed
    # Purposes the change did not touch keep their consent.
    assert derive(False, changed["model_training"], Latest(True, 2, AT)).allowed


def test_an_operator_can_add_a_purpose() -> None:
    source = _purposes_text() + (
        '\n[purpose.voice_profile]\ntitle = "Voice match"\n'
        'description = "Recognise who is speaking."\nadult_default = false\n'
    )
    catalogue = parse_purposes(source)
    assert "voice_profile" in catalogue
    assert not derive(False, catalogue["voice_profile"], None).allowed


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda s: s.replace("[purpose.storage]", "[purpose.kept]"),
            "[purpose.storage] is required",
        ),
        (lambda s: s.replace("separate = true", "separate = false"), "asked for separately (C4)"),
        (lambda s: s.replace("changed_in = 1", "changed_in = 9", 1), "is after notice_version"),
        (lambda s: "colour = 'blue'\n" + s, "unknown top-level key 'colour'"),
    ],
)
def test_a_bad_purposes_file_is_refused_with_its_problems(edit: object, problem: str) -> None:
    assert callable(edit)
    with pytest.raises(PurposesError) as caught:
        parse_purposes(edit(_purposes_text()))
    assert problem in str(caught.value)


def test_training_cannot_be_on_by_default() -> None:
    source = _purposes_text().replace(
        "[purpose.model_training]\n", "[purpose.model_training]\nadult_default = true\n", 1
    )
    source = source.replace(
        "adult_default = false\nchanged_in = 1\n\n[purpose.third",
        "changed_in = 1\n\n[purpose.third",
        1,
    )
    with pytest.raises(PurposesError) as caught:
        parse_purposes(source)
    assert "model_training is off by default (C4)" in str(caught.value)


def _purposes_text(*, notice_version: int = 1, review_changed_in: int = 1) -> str:
    text = default_purposes_path().read_text()
    text = text.replace("notice_version = 1", f"notice_version = {notice_version}")
    head, _, tail = text.partition("[purpose.human_review]")
    tail = tail.replace("changed_in = 1", f"changed_in = {review_changed_in}", 1)
    return head + "[purpose.human_review]" + tail
