"""The published retention notice says what the policy says, in Markdown and in HTML (A7, C9),
and never names a customer under a legal hold."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from tests.unit.test_retention_policy import HEAD, all_rules, hold, rule
from tutela.retention.notice import format_age, render_html, render_markdown
from tutela.retention.policy import Policy, load_policy, parse_policy

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class _Page(HTMLParser):
    """What a browser would show and load: the text, the tags, the attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(document: str) -> _Page:
    parsed = _Page()
    parsed.feed(document)
    parsed.close()
    return parsed


def shown(document: str) -> str:
    return " ".join(" ".join(page(document).text).split())


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.mark.parametrize(
    ("days", "words"),
    [
        (1, "1 day"),
        (7, "7 days"),
        (30, "30 days"),
        (90, "3 months (90 days)"),
        (180, "6 months (180 days)"),
        (365, "1 year (365 days)"),
        (548, "18 months (548 days)"),
        (730, "2 years (730 days)"),
        (100, "100 days"),
    ],
)
def test_ages_are_written_in_human_units(days: int, words: str) -> None:
    assert format_age(timedelta(days=days)) == words


def test_markdown_states_every_rule_and_the_policy_digest(policy: Policy) -> None:
    notice = render_markdown(policy, now=NOW)
    for rule_ in policy.rules.values():
        row = next(
            line for line in notice.splitlines() if line.startswith("|") and rule_.purpose in line
        )
        assert rule_.business_need in row
        assert format_age(rule_.max_age) in row
    assert policy.sha256 in notice
    assert notice.startswith("# Retention notice\n")
    assert "## Adults" in notice and "## Children" in notice


def test_html_states_every_rule_and_the_policy_digest(policy: Policy) -> None:
    text = shown(render_html(policy, now=NOW))
    for rule_ in policy.rules.values():
        assert rule_.purpose in text
        assert rule_.business_need in text
        assert format_age(rule_.max_age) in text
    assert policy.sha256 in text


def test_html_is_one_self_contained_page_without_scripts(policy: Policy) -> None:
    document = render_html(policy, now=NOW)
    assert document.startswith("<!DOCTYPE html>")
    parsed = page(document)
    assert "script" not in parsed.tags
    assert not {"link", "img", "iframe", "object", "embed"} & set(parsed.tags)
    assert not [name for name, _ in parsed.attributes if name in {"src", "href"}]
    assert "http://" not in document and "https://" not in document
    assert parsed.tags.count("table") == 2


def test_notice_describes_choices_inactive_children_consent_and_erasure(policy: Policy) -> None:
    for document in (render_markdown(policy, now=NOW), shown(render_html(policy, now=NOW))):
        assert "For adults: after 3 months (90 days), after 18 months (548 days) or never." in (
            document
        )
        assert "For children: after 3 months (90 days) or after 18 months (548 days)" in document
        assert "“never” is not offered" in document
        assert "has not been used for 18 months (548 days)" in document
        assert "tell the child's parents before anything is deleted" in document
        assert "(89 days) after it is identified" in document
        assert "consent has not been given within 30 days" in document
        assert "Every deletion is verified before it is called complete." in document
        assert "Ed25519" in document
        assert "within 30 days of receiving it" in document


def test_the_erasure_limit_comes_from_the_configuration(policy: Policy) -> None:
    notice = render_markdown(policy, now=NOW, erasure_completion_days=21)
    assert "within 21 days of receiving it" in notice


def test_the_notice_follows_a_changed_policy() -> None:
    before = parse_policy(HEAD + all_rules())
    after = parse_policy(
        HEAD + all_rules(skip={("voice", "child")}) + rule("voice", "child", max_age_days="14")
    )
    assert before.sha256 != after.sha256
    notice = render_markdown(after, now=NOW)
    row = next(line for line in notice.splitlines() if "Purpose of voice for child." in line)
    assert "| 14 days |" in row
    assert after.sha256 in notice and before.sha256 not in notice


def test_markup_in_a_purpose_is_escaped() -> None:
    purpose = "Greet <script>alert('x')</script> & co | more"
    policy = parse_policy(
        HEAD + all_rules(skip={("voice", "adult")}) + rule("voice", "adult", purpose=f'"{purpose}"')
    )
    document = render_html(policy, now=NOW)
    assert "<script" not in document
    assert "&lt;script&gt;" in document
    assert purpose in shown(document)
    assert "script" not in page(document).tags
    markdown = render_markdown(policy, now=NOW)
    # Markdown passes raw HTML through to its renderer: every < is backslash-escaped.
    assert re.search(r"(?<!\\)<", markdown) is None
    row = next(line for line in markdown.splitlines() if "Greet" in line)
    # Still one row of four cells: the | in the purpose does not split it.
    assert len(re.split(r"(?<!\\)\|", row.strip().strip("|"))) == 4


def test_legal_holds_are_counted_but_never_described() -> None:
    household = uuid.uuid4()
    profile = uuid.uuid4()
    text = HEAD + all_rules()
    text += hold(
        id='"case-2026-114"',
        household=f'"{household}"',
        profile=f'"{profile}"',
        reason='"Subpoena about Ada Kovacs"',
        expires="2027-03-01",
    )
    text += hold(id='"case-2025-009"', reason='"Closed matter"', expires="2026-01-01")
    policy = parse_policy(text)
    for document in (render_markdown(policy, now=NOW), render_html(policy, now=NOW)):
        for secret in ("Ada Kovacs", "Subpoena", "Closed matter", "case-2026-114", "case-2025"):
            assert secret not in document
        for identifier in (household, profile):
            assert str(identifier) not in document
            assert identifier.hex not in document
        assert "On 2026-11-29, 1 legal hold was in force." in " ".join(document.split())
    later = render_markdown(policy, now=datetime(2027, 3, 1, tzinfo=UTC))
    assert "On 2027-03-01, 0 legal holds were in force." in later
