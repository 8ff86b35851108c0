"""Ephemeral voice in the pure rules (C11): the policy's [ephemeral_voice] table and its
problems, the notice's words, which uploads may be ephemeral, and `rules.trainable`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.test_retention_policy import HEAD, all_rules, line_of, problems
from tutela.core.errors import InvalidInput
from tutela.households.models import ProfileKind
from tutela.retention.notice import format_hours, render_html, render_markdown
from tutela.retention.policy import load_policy, parse_policy
from tutela.vault import rules
from tutela.vault.models import ItemKind, ItemState, MediaItem

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _with(table: str) -> str:
    return HEAD + table + all_rules()


# --- the policy file ------------------------------------------------------------------


def test_the_packaged_policy_keeps_ephemeral_voice_24_hours() -> None:
    assert load_policy().ephemeral_voice_max_age == timedelta(hours=24)


def test_without_the_table_the_default_is_24_hours() -> None:
    assert "ephemeral_voice" not in HEAD
    assert parse_policy(HEAD + all_rules()).ephemeral_voice_max_age == timedelta(hours=24)


def test_the_table_sets_the_age_in_hours() -> None:
    policy = parse_policy(_with("\n[ephemeral_voice]\ntranscript_max_age_hours = 6\n"))
    assert policy.ephemeral_voice_max_age == timedelta(hours=6)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", "at least 1 hour, not 0"),
        ("-3", "at least 1 hour, not -3"),
        ("73", "at most 72 hours, not 73: a voice used in place of typed words is kept only"),
        ("8760", "at most 72 hours"),
        ("1.5", "whole number of hours, not a decimal number"),
        ('"24"', "whole number of hours, not a string"),
        ("true", "whole number of hours, not true/false"),
    ],
)
def test_the_age_must_be_a_brief_whole_number_of_hours(value: str, words: str) -> None:
    text = _with(f"\n[ephemeral_voice]\ntranscript_max_age_hours = {value}\n")
    [(line, message)] = problems(text)
    assert line == line_of(text, "transcript_max_age_hours")
    assert words in message
    assert message.startswith("transcript_max_age_hours must be")


def test_a_missing_age_and_an_unknown_key_are_named_on_their_lines() -> None:
    text = _with("\n[ephemeral_voice]\nrecording_max_age_hours = 1\n")
    found = problems(text)
    assert found == [
        (
            line_of(text, "[ephemeral_voice]"),
            "[ephemeral_voice] is missing transcript_max_age_hours",
        ),
        (
            line_of(text, "recording_max_age_hours"),
            "unknown key 'recording_max_age_hours' in [ephemeral_voice]; expected one of "
            "transcript_max_age_hours",
        ),
    ]


def test_the_table_given_as_a_value_is_refused() -> None:
    text = "ephemeral_voice = 24\n" + HEAD + all_rules()
    [(line, message)] = problems(text)
    assert line == 1
    assert message == "ephemeral_voice must be a table, not a whole number"


# --- the notice -------------------------------------------------------------------------


@pytest.mark.parametrize(("hours", "words"), [(1, "1 hour"), (24, "24 hours"), (72, "72 hours")])
def test_hours_are_written_as_hours(hours: int, words: str) -> None:
    assert format_hours(timedelta(hours=hours)) == words


def test_the_notice_says_the_recording_is_not_kept_and_for_how_long_the_transcript_is() -> None:
    for hours in (24, 6):
        policy = parse_policy(_with(f"\n[ephemeral_voice]\ntranscript_max_age_hours = {hours}\n"))
        for document in (render_markdown(policy, now=NOW), render_html(policy, now=NOW)):
            flat = " ".join(document.split())
            assert "Voice used in place of typing" in flat
            assert "we do not keep the recording" in flat
            assert f"Its transcript is deleted {hours} hours after it arrives" in flat
            assert "Neither is ever used to train models or to identify anyone" in flat


# --- uploads and training ----------------------------------------------------------------


def test_only_voice_may_be_ephemeral() -> None:
    rules.check_ephemeral(ItemKind.VOICE, True)
    for kind in (ItemKind.VIDEO, ItemKind.SNAPSHOT, ItemKind.THUMBNAIL):
        rules.check_ephemeral(kind, False)
        with pytest.raises(InvalidInput) as caught:
            rules.check_ephemeral(kind, True)
        assert caught.value.code == "ephemeral_voice_only"


def _item(*, ephemeral: bool, subject: ProfileKind, state: ItemState) -> MediaItem:
    return MediaItem(
        household_id=uuid.uuid4(),
        id=uuid.uuid4(),
        profile_id=uuid.uuid4(),
        kind=ItemKind.VOICE,
        subject_class=subject,
        media_type="audio/wav",
        captured_at=NOW,
        received_at=NOW,
        size=10,
        content_mac=b"",
        state=state,
        ephemeral=ephemeral,
    )


def test_ephemeral_items_are_never_trainable() -> None:
    """C11: never for training, whoever spoke; and never a child's or one being erased."""
    adult, child = ProfileKind.ADULT, ProfileKind.CHILD
    active, erasing = ItemState.ACTIVE, ItemState.UNDER_ERASURE
    assert rules.trainable(_item(ephemeral=False, subject=adult, state=active)) is True
    assert rules.trainable(_item(ephemeral=True, subject=adult, state=active)) is False
    assert rules.trainable(_item(ephemeral=True, subject=child, state=active)) is False
    assert rules.trainable(_item(ephemeral=False, subject=child, state=active)) is False
    assert rules.trainable(_item(ephemeral=False, subject=adult, state=erasing)) is False
