"""The retention policy file: the packaged default, line-numbered problems, legal holds and
the automatic-deletion choices (A1-A3, A6, C5, C9). No I/O beyond reading test files."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tutela.core.errors import InvalidInput
from tutela.households.models import ProfileKind
from tutela.retention.policy import (
    AUTO_DELETE_CHOICES,
    PolicyError,
    check_auto_delete_choice,
    default_policy_path,
    load_policy,
    parse_policy,
)
from tutela.vault.models import ItemKind

HOUSEHOLD = uuid.UUID("0b9f6f0e-6c1e-4f43-9d7e-2f1b7d3c9a11")
PROFILE = uuid.UUID("5d2c8a47-1e9b-4c1a-8f66-3a7e0c2d4b19")
OTHER_PROFILE = uuid.UUID("9e3f1c55-7a20-4d6b-b3a1-0c8d2e4f6a70")

HEAD = """\
version = 1

[inactive_child]
inactive_after_days = 548
grace_days = 89

[consent_contact]
max_age_days = 30
purpose = "Ask a parent for consent."
"""


def rule(kind: str, subject: str, **fields: str | None) -> str:
    """One [[rule]] table; a field given as None is left out, a string is raw TOML."""
    values: dict[str, str | None] = {
        "kind": f'"{kind}"',
        "subject": f'"{subject}"',
        "purpose": f'"Purpose of {kind} for {subject}."',
        "business_need": f'"Need of {kind} for {subject}."',
        "max_age_days": "90",
    }
    values.update(fields)
    body = "".join(f"{key} = {value}\n" for key, value in values.items() if value is not None)
    return f"\n[[rule]]\n{body}"


def all_rules(*, skip: set[tuple[str, str]] | None = None) -> str:
    return "".join(
        rule(kind.value, subject.value)
        for subject in ProfileKind
        for kind in ItemKind
        if (kind.value, subject.value) not in (skip or set())
    )


def hold(**fields: str | None) -> str:
    values: dict[str, str | None] = {
        "id": '"case-1"',
        "household": f'"{HOUSEHOLD}"',
        "reason": '"Preservation order"',
        "expires": "2027-03-01",
    }
    values.update(fields)
    body = "".join(f"{key} = {value}\n" for key, value in values.items() if value is not None)
    return f"\n[[hold]]\n{body}"


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[nth - 1]


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value.problems


def lines(text: str) -> list[int]:
    return [line for line, _ in problems(text)]


# --- the packaged default ----------------------------------------------------------------


def test_default_policy_has_a_rule_for_every_kind_and_subject() -> None:
    policy = load_policy()
    assert set(policy.rules) == {(k, s) for k in ItemKind for s in ProfileKind}
    for rule_ in policy.rules.values():
        assert rule_.purpose and rule_.business_need
        assert timedelta(days=1) <= rule_.max_age <= timedelta(days=3650)


def test_default_policy_keeps_children_shorter_and_never_beyond_18_months() -> None:
    policy = load_policy()
    for kind in ItemKind:
        child = policy.max_age(kind, ProfileKind.CHILD)
        assert child <= timedelta(days=548)
        assert child <= policy.max_age(kind, ProfileKind.ADULT)
    assert policy.max_age("thumbnail", "adult") == policy.max_age("video", "adult")
    assert policy.max_age("thumbnail", "child") == policy.max_age("video", "child")


def test_default_policy_limits_inactive_children_and_consent_contacts() -> None:
    policy = load_policy()
    assert policy.inactive_child_after == timedelta(days=548)
    assert policy.inactive_child_grace == timedelta(days=89)
    assert policy.consent_contact_max_age == timedelta(days=30)
    assert policy.consent_contact_purpose
    assert policy.holds == ()


def test_default_policy_names_its_file_and_digest() -> None:
    policy = load_policy()
    assert load_policy(None) == policy
    assert policy.source == "default_policy.toml"
    assert policy.sha256 == hashlib.sha256(default_policy_path().read_bytes()).hexdigest()


def test_max_age_looks_up_by_enum_or_name() -> None:
    policy = parse_policy(
        HEAD + all_rules(skip={("voice", "child")}) + rule("voice", "child", max_age_days="14")
    )
    assert policy.max_age(ItemKind.VOICE, ProfileKind.CHILD) == timedelta(days=14)
    assert policy.max_age("voice", "child") == timedelta(days=14)
    assert policy.max_age("voice", "adult") == timedelta(days=90)
    with pytest.raises(ValueError, match="sound"):
        policy.max_age("sound", "child")


def test_a_rule_remembers_its_line() -> None:
    text = HEAD + all_rules()
    policy = parse_policy(text)
    rule_ = policy.rules[(ItemKind.LOCATION, ProfileKind.CHILD)]
    assert rule_.line == line_of(text, 'kind = "location"', nth=2) - 1


# --- line-numbered problems --------------------------------------------------------------


def test_toml_syntax_error_names_its_line() -> None:
    text = "version = 1\n\n[inactive_child]\ngrace_days = = 90\n"
    [(line, message)] = problems(text)
    assert line == 4
    assert "not valid TOML" in message


def test_toml_error_at_the_end_names_the_last_line() -> None:
    text = 'version = 1\npurpose = "unterminated\n'
    [(line, _)] = problems(text)
    assert line == 2


def test_error_text_reads_file_colon_line_colon_message() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("version = 1\nx = = 2\n", source="retention.toml")
    assert str(caught.value).startswith("retention.toml:2: not valid TOML")


def test_unknown_top_level_key() -> None:
    text = HEAD.replace("version = 1", "version = 1\nretain_forever = true") + all_rules()
    [(line, message)] = problems(text)
    assert line == line_of(text, "retain_forever")
    assert "unknown key 'retain_forever' at the top level" in message


def test_unknown_keys_inside_tables() -> None:
    text = HEAD.replace("grace_days = 89", "grace_days = 89\ngrace_hours = 2") + all_rules()
    text = text.replace(
        'max_age_days = 90\n\n[[rule]]\nkind = "video"',
        'max_age_days = 90\nmax_age_hours = 1\n\n[[rule]]\nkind = "video"',
        1,
    )
    assert lines(text) == [line_of(text, "grace_hours"), line_of(text, "max_age_hours")]


def test_sub_table_of_a_rule_is_an_unknown_key() -> None:
    text = HEAD + all_rules() + "\n[rule.extra]\nnote = 1\n"
    [(line, message)] = problems(text)
    assert line == line_of(text, "[rule.extra]")
    assert "'extra'" in message


def test_missing_purpose_and_business_need_point_at_the_rule() -> None:
    text = (
        HEAD
        + all_rules(skip={("video", "adult")})
        + rule("video", "adult", purpose=None, business_need=None)
    )
    header = line_of(text, 'kind = "video"', nth=2) - 1
    found = problems(text)
    assert [line for line, _ in found] == [header, header]
    assert "missing purpose" in found[0][1]
    assert "missing business_need" in found[1][1]


def test_missing_max_age_is_refused() -> None:
    text = HEAD + all_rules(skip={("video", "adult")}) + rule("video", "adult", max_age_days=None)
    [(line, message)] = problems(text)
    assert line == line_of(text, 'kind = "video"', nth=2) - 1
    assert "missing max_age_days" in message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", "at least 1 day"),
        ("-30", "at least 1 day"),
        ("3651", "at most 3650 days"),
        ("90.5", "whole number"),
        ('"90"', "not a string"),
        ("true", "whole number"),
        ("inf", "whole number"),
    ],
)
def test_max_age_must_be_a_positive_bounded_whole_number(value: str, words: str) -> None:
    text = HEAD + all_rules(skip={("location", "child")})
    text += rule("location", "child", max_age_days=value)
    [(line, message)] = problems(text)
    assert line == line_of(text, f"max_age_days = {value}")
    assert words in message


def test_text_fields_must_be_non_empty_strings() -> None:
    text = HEAD + all_rules(skip={("voice", "adult")})
    text += rule("voice", "adult", purpose='"   "', business_need="42")
    found = problems(text)
    assert found == [
        (line_of(text, 'purpose = "   "'), "purpose is empty"),
        (line_of(text, "business_need = 42"), "business_need must be a string, not a whole number"),
    ]


def test_unknown_kind_and_subject() -> None:
    text = HEAD + all_rules() + rule("audio", "teen")
    found = problems(text)
    assert [line for line, _ in found] == [
        line_of(text, 'kind = "audio"'),
        line_of(text, 'subject = "teen"'),
    ]
    assert "unknown kind 'audio'" in found[0][1]
    assert "voice, video, snapshot, location, transcript, thumbnail" in found[0][1]
    assert "unknown subject 'teen'" in found[1][1]


def test_duplicate_rule_reports_both_lines() -> None:
    text = HEAD + all_rules() + rule("snapshot", "child", max_age_days="30")
    first = line_of(text, 'kind = "snapshot"', nth=2) - 1
    second = line_of(text, 'kind = "snapshot"', nth=3) - 1
    found = problems(text)
    assert [line for line, _ in found] == [first, second]
    assert f"repeated at line {second}" in found[0][1]
    assert f"the first is at line {first}" in found[1][1]


def test_missing_pairs_are_named_at_the_last_rule() -> None:
    text = HEAD + all_rules(skip={("voice", "child"), ("location", "adult")})
    last = line_of(text, "[[rule]]", nth=10)
    found = problems(text)
    assert [line for line, _ in found] == [last, last]
    messages = " ".join(message for _, message in found)
    assert "kind 'voice' and subject 'child'" in messages
    assert "kind 'location' and subject 'adult'" in messages


def test_a_policy_without_rules_reports_every_pair_at_line_1() -> None:
    found = problems(HEAD)
    assert len(found) == 12
    assert {line for line, _ in found} == {1}


def test_missing_tables_and_version() -> None:
    found = problems(all_rules())
    assert [line for line, _ in found] == [1, 1, 1]
    messages = " ".join(message for _, message in found)
    assert "version is missing" in messages
    assert "[inactive_child]" in messages
    assert "[consent_contact]" in messages


def test_unsupported_version() -> None:
    text = HEAD.replace("version = 1", "version = 2") + all_rules()
    assert lines(text) == [1]
    assert "version must be 1" in problems(text)[0][1]


def test_inactive_child_grace_cannot_pass_90_days() -> None:
    text = HEAD.replace("grace_days = 89", "grace_days = 120") + all_rules()
    [(line, message)] = problems(text)
    assert line == line_of(text, "grace_days")
    assert "(A2)" in message


def test_a_table_given_as_a_value_is_refused() -> None:
    text = "version = 1\ninactive_child = 548\n" + HEAD.split("\n", 5)[5] + all_rules()
    [(line, message)] = problems(text)
    assert line == 2
    assert "inactive_child must be a table" in message


def test_several_problems_are_reported_together_in_line_order() -> None:
    text = HEAD.replace("max_age_days = 30", 'max_age_days = "a month"')
    text += all_rules(skip={("video", "child"), ("voice", "adult")})
    text += rule("voice", "adult", max_age_days="0")
    text += rule("film", "child")
    text += hold(household='"not-a-uuid"')
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    error = caught.value
    assert [line for line, _ in error.problems] == [
        line_of(text, 'max_age_days = "a month"'),
        line_of(text, "max_age_days = 0"),
        line_of(text, 'kind = "film"') - 1,  # no video/child rule: named at the last rule
        line_of(text, 'kind = "film"'),
        line_of(text, "not-a-uuid"),
    ]
    assert len(str(error).splitlines()) == 5
    assert all(row.startswith("policy.toml:") for row in str(error).splitlines())


def test_headers_inside_a_multi_line_string_do_not_shift_lines() -> None:
    text = HEAD.replace(
        'purpose = "Ask a parent for consent."',
        'purpose = """Ask a parent\n[[rule]]\nkind = "x"\n"""',
    )
    text += all_rules(skip={("voice", "adult")}) + rule("voice", "adult", max_age_days="0")
    [(line, _)] = problems(text)
    assert line == line_of(text, "max_age_days = 0")


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_bytes(b'version = 1\n\npurpose = "caf\xe9"\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith("retention.toml:3: ")


def test_load_policy_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "ours.toml"
    path.write_text(HEAD + all_rules(), encoding="utf-8")
    policy = load_policy(path)
    assert policy.source == "ours.toml"
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- legal holds -------------------------------------------------------------------------


def test_hold_problems_are_reported_on_their_lines() -> None:
    text = HEAD + all_rules()
    text += hold(household='"nope"', reason=None, expires='"2027-03-01"')
    text += hold(id='"case-1"', profile="7", expires=None)
    first = line_of(text, "[[hold]]")
    second = line_of(text, "[[hold]]", nth=2)
    found = problems(text)

    def at(line: int, words: str) -> bool:
        return any(n == line and words in message for n, message in found)

    assert at(line_of(text, '"nope"'), "household must be a UUID")
    assert at(first, "missing reason")
    assert at(line_of(text, 'expires = "2027-03-01"'), "without quotes")
    assert at(second, "missing expires: no hold is open-ended")
    assert at(line_of(text, "profile = 7"), "profile must be a string")
    assert at(first, "the hold id 'case-1' is used again")
    assert at(second, f"a second hold with id 'case-1'; the first is at line {first}")
    assert len(found) == 7


def test_a_hold_needs_an_expiry_that_is_a_date() -> None:
    text = HEAD + all_rules() + hold(expires="12:00:00")
    [(line, message)] = problems(text)
    assert line == line_of(text, "expires = 12:00:00")
    assert "a time of day" in message


def test_holds_parse_dates_as_midnight_utc_and_convert_offsets() -> None:
    text = HEAD + all_rules()
    text += hold(id='"a"', expires="2027-03-01")
    text += hold(id='"b"', expires="2027-03-01T09:30:00+02:00")
    text += hold(id='"c"', expires="2027-03-01T09:30:00")
    text += hold(id='"d"', profile=f'"{PROFILE}"')
    policy = parse_policy(text)
    by_id = {h.id: h for h in policy.holds}
    assert by_id["a"].expires_at == datetime(2027, 3, 1, tzinfo=UTC)
    assert by_id["b"].expires_at == datetime(2027, 3, 1, 7, 30, tzinfo=UTC)
    assert by_id["c"].expires_at == datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    assert by_id["a"].profile_id is None
    assert by_id["d"].profile_id == PROFILE
    assert by_id["a"].household_id == HOUSEHOLD
    assert by_id["a"].reason == "Preservation order"
    assert by_id["a"].line == line_of(text, "[[hold]]")


def test_a_household_hold_covers_every_profile_until_it_expires() -> None:
    policy = parse_policy(HEAD + all_rules() + hold(expires="2027-03-01"))
    [held] = policy.holds
    before = datetime(2027, 2, 28, 23, 59, tzinfo=UTC)
    at_expiry = datetime(2027, 3, 1, tzinfo=UTC)
    assert held.covers(HOUSEHOLD, PROFILE, before)
    assert held.covers(HOUSEHOLD, None, before)
    assert not held.covers(HOUSEHOLD, PROFILE, at_expiry)
    assert not held.covers(uuid.uuid4(), PROFILE, before)
    assert policy.hold_for(HOUSEHOLD, PROFILE, before) == held
    assert policy.hold_for(HOUSEHOLD, PROFILE, at_expiry) is None
    assert policy.active_holds(before) == (held,)
    assert policy.active_holds(at_expiry) == ()


def test_a_profile_hold_covers_only_that_profile() -> None:
    policy = parse_policy(HEAD + all_rules() + hold(profile=f'"{PROFILE}"'))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    [held] = policy.holds
    assert held.covers(HOUSEHOLD, PROFILE, now)
    assert not held.covers(HOUSEHOLD, OTHER_PROFILE, now)
    assert not held.covers(HOUSEHOLD, None, now)
    assert policy.hold_for(HOUSEHOLD, OTHER_PROFILE, now) is None


def test_hold_for_returns_the_hold_that_lasts_longest() -> None:
    text = HEAD + all_rules()
    text += hold(id='"short"', expires="2026-07-01")
    text += hold(id='"long"', profile=f'"{PROFILE}"', expires="2027-07-01")
    text += hold(id='"other-home"', household=f'"{uuid.uuid4()}"', expires="2030-01-01")
    policy = parse_policy(text)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    found = policy.hold_for(HOUSEHOLD, PROFILE, now)
    assert found is not None and found.id == "long"
    found = policy.hold_for(HOUSEHOLD, OTHER_PROFILE, now)
    assert found is not None and found.id == "short"


# --- automatic-deletion choices (A6) -----------------------------------------------------


def test_auto_delete_choices_are_3_months_18_months_or_never() -> None:
    assert dict(AUTO_DELETE_CHOICES) == {
        "3m": timedelta(days=90),
        "18m": timedelta(days=548),
        "never": None,
    }


@pytest.mark.parametrize(
    ("choice", "subject", "interval"),
    [
        ("3m", ProfileKind.ADULT, timedelta(days=90)),
        ("18m", ProfileKind.ADULT, timedelta(days=548)),
        ("never", ProfileKind.ADULT, None),
        ("3m", ProfileKind.CHILD, timedelta(days=90)),
        ("18m", ProfileKind.CHILD, timedelta(days=548)),
    ],
)
def test_offered_choices_give_their_interval(
    choice: str, subject: ProfileKind, interval: timedelta | None
) -> None:
    assert check_auto_delete_choice(choice, subject) == interval


def test_never_is_refused_for_a_child() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_auto_delete_choice("never", ProfileKind.CHILD)
    assert caught.value.code == "child_never_not_allowed"


@pytest.mark.parametrize("choice", ["", "1y", "NEVER", "forever", "90"])
def test_unknown_choice_is_refused(choice: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_auto_delete_choice(choice, ProfileKind.ADULT)
    assert caught.value.code == "invalid_auto_delete"
