"""The staff-access notice says what the staff-access policy file says, and only that (R9);
a file that would weaken R2 or R4 is refused with every problem named (R2, R3, R4)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from tests.unit.test_retention_notice import page, shown
from tutela.transparency.notice import build_document, render_html, render_markdown
from tutela.transparency.policy import (
    StaffAccessPolicy,
    StaffAccessPolicyError,
    default_staff_access_path,
    load_staff_access,
    parse_staff_access,
)
from tutela.transparency.rules import AccessPurpose, pseudonym

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DEFAULT = default_staff_access_path().read_text(encoding="utf-8")


def notice(policy: StaffAccessPolicy) -> str:
    return shown(render_html(build_document(policy, published_at=NOW)))


def changed(old: str, new: str, text: str = DEFAULT) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems(text: str) -> list[str]:
    with pytest.raises(StaffAccessPolicyError) as refused:
        parse_staff_access(text)
    return refused.value.problems


def test_the_packaged_policy_names_every_role_and_what_it_can_see() -> None:
    text = notice(load_staff_access())
    assert "Who at Tutela Home can see" in text
    for title in (
        "Trust & Safety reviewer",
        "Privacy officer",
        "Service administrator",
        "Customer support agent",
        "Auditor",
        "Security engineer",
    ):
        assert title in text
    # Roles without a path to customer content are named too, with what they see: nothing.
    assert re.search(r"Customer support agent .*? Nothing\. Never\.", text)
    assert "bedroom, bathroom and nursery are never shown to an employee" in text
    assert "We keep each record for 2 years (730 days)" in text
    assert "Version 1, in force since 2026-12-07" in text


def test_changing_the_configuration_changes_the_notice() -> None:
    before = load_staff_access()
    text = changed('title = "Trust & Safety reviewer"', 'title = "Content moderator"')
    text = changed("access_records_kept_days = 730", "access_records_kept_days = 365", text)
    text = changed('operator = "Tutela Home"', 'operator = "Acme Homes"', text)
    text = changed("version = 1", "version = 2", text)
    text = changed("review_within_days = 2", "review_within_days = 1", text)
    after = parse_staff_access(text)
    shown_after = notice(after)
    assert "Content moderator" in shown_after and "Trust & Safety" not in shown_after
    assert "We keep each record for 1 year (365 days)" in shown_after
    assert "Who at Acme Homes can see" in shown_after and "Tutela Home" not in shown_after
    assert "within 1 day afterwards" in shown_after
    assert "Version 2" in shown_after
    assert after.sha256 != before.sha256
    assert notice(after) != notice(before)


def test_taking_a_kind_of_data_from_a_role_takes_it_from_the_notice() -> None:
    text = changed(
        'data = ["video", "snapshot", "thumbnail", "voice", "transcript", "location"]',
        'data = ["voice"]',
    )
    document = build_document(parse_staff_access(text), published_at=NOW)
    officer = next(r for r in document["roles"] if r["id"] == "privacy_officer")
    assert officer["data"] == ["voice"]
    row = next(
        row
        for section in document["sections"]
        if section["table"]
        for row in section["table"]["rows"]
        if row[0] == "Privacy officer"
    )
    assert row[2] == "Voice recordings."


def test_comments_and_layout_do_not_change_the_policy_digest() -> None:
    reformatted = "# a note for the operator\n" + DEFAULT.replace(" = ", "   =   ")
    assert parse_staff_access(reformatted).sha256 == load_staff_access().sha256


def test_markdown_and_html_say_the_same_and_escape_markup() -> None:
    text = changed('operator = "Tutela Home"', 'operator = "<b>Acme</b> & *Co*"')
    document = build_document(parse_staff_access(text), published_at=NOW)
    html = render_html(document)
    parsed = page(html)
    assert "b" not in parsed.tags and "script" not in parsed.tags
    assert "<b>Acme</b> & *Co*" in shown(html)
    markdown = render_markdown(document)
    assert r"\<b\>Acme\</b\> \& \*Co\*" in markdown
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # R2: human review rests on the customer's consent.
        ('requires = ["human_review_consent"]', "requires = []", "human_review_consent (R2"),
        # R2: a support look rests on a ticket the customer opened.
        ('requires = ["ticket"]\n', "requires = []\n", "must include ticket"),
        # Bedrooms and bathrooms are never reviewable.
        ('["bedroom", "bathroom", "nursery"]', '["nursery"]', "must include bathroom, bedroom"),
        # R4: only roles that sign in with a passkey or security key may see content.
        (
            'data = []\npurposes = []\n\n[[role]]\nid = "auditor"',
            'data = ["voice"]\npurposes = ["support_ticket"]\n\n[[role]]\nid = "auditor"',
            "passkey or security key",
        ),
        ("review_within_days = 2\n", "", "review_within_days is missing"),
        ("access_records_kept_days = 730", "access_records_kept_days = 0", "from 1 to 3650"),
        ('id = "security"', 'id = "janitor"', "unknown role"),
        ('id = "break_glass"', 'id = "curiosity"', "unknown purpose"),
        ('purposes = ["break_glass"]', 'purposes = ["break_glass", "curiosity"]', "curiosity"),
        ('data = ["video"', 'data = ["diary"', "unknown kind of data 'diary'"),
        ("version = 1", 'version = "one"', "version must be a whole number"),
        ('operator = "Tutela Home"', 'operater = "Tutela Home"', "unknown key 'operater'"),
    ],
)
def test_a_policy_that_weakens_the_rules_is_refused(old: str, new: str, expected: str) -> None:
    found = problems(changed(old, new))
    assert any(expected in p for p in found), found


def test_every_role_must_be_named_even_those_that_see_nothing() -> None:
    start = DEFAULT.index('[[role]]\nid = "security"')
    found = problems(DEFAULT[:start])
    assert any("no [[role]] for 'security'" in p for p in found), found


def test_every_problem_is_listed_at_once() -> None:
    text = changed("version = 1", 'version = "one"')
    text = changed("access_records_kept_days = 730", "access_records_kept_days = -1", text)
    assert len(problems(text)) >= 2


def test_not_toml_is_refused_with_a_sentence() -> None:
    assert problems("version = = 1")[0].startswith("not valid TOML")


def test_a_role_may_look_only_for_its_purposes_at_its_kinds() -> None:
    policy = load_staff_access()
    assert policy.allows("reviewer", AccessPurpose.CONSENTED_REVIEW, None)
    assert not policy.allows("reviewer", AccessPurpose.LEGAL_PROCESS, None)
    assert not policy.allows("support", AccessPurpose.SUPPORT_TICKET, None)
    assert not policy.allows("admin", AccessPurpose.BREAK_GLASS, "location")  # type: ignore[arg-type]
    assert policy.allows("privacy_officer", AccessPurpose.BREAK_GLASS, "location")  # type: ignore[arg-type]
    assert not policy.allows("nobody", AccessPurpose.BREAK_GLASS, None)
    assert policy.requires_ticket(AccessPurpose.LEGAL_PROCESS)
    assert not policy.requires_ticket(AccessPurpose.BREAK_GLASS)


def test_a_pseudonym_is_stable_in_a_household_and_unlinkable_across_households() -> None:
    key = bytes(range(32))
    staff, home = uuid.uuid4(), uuid.uuid4()
    first = pseudonym(key, household_id=home, staff_id=staff)
    assert re.fullmatch(r"[0-9a-f]{4}", first)
    assert pseudonym(key, household_id=home, staff_id=staff) == first
    # Over many households the same employee's pseudonyms spread out (no one fixed tag).
    seen = {pseudonym(key, household_id=uuid.uuid4(), staff_id=staff) for _ in range(50)}
    assert len(seen) > 40
    # Without the operator's key the ids give nothing away: another key, other pseudonyms.
    homes = [uuid.uuid4() for _ in range(20)]
    mine = [pseudonym(key, household_id=h, staff_id=staff) for h in homes]
    theirs = [pseudonym(bytes(32), household_id=h, staff_id=staff) for h in homes]
    assert sum(a != b for a, b in zip(mine, theirs, strict=True)) > 15
