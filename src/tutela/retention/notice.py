"""The published retention notice, generated from the policy that runs deletion (A7, C9).

Markdown and HTML are two renderings of one list of sections built from a `Policy`, so
neither can say something the rules do not (A7). The notice names purposes, business
needs and maximum ages (C9), the automatic-deletion choices (A6), the inactive-child
rule (A1-A3), the consent-contact limit (C5), how briefly voice used in place of typing
is kept (C11) and how erasure requests are carried out.
Legal holds appear only as a count: their households, profiles and reasons identify
customers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tutela.households.models import ProfileKind
from tutela.notices.document import Document, Section, Table, to_html, to_markdown
from tutela.retention.policy import (
    AUTO_DELETE_CHOICES,
    CHILD_AUTO_DELETE_CHOICES,
    Policy,
)
from tutela.settings import Settings
from tutela.vault.models import ItemKind

TITLE = "Retention notice"

# The order a reader meets them in: what they say, then what the cameras see, then where.
_KIND_LABELS: dict[ItemKind, str] = {
    ItemKind.VOICE: "Voice recordings",
    ItemKind.TRANSCRIPT: "Transcripts of voice requests",
    ItemKind.VIDEO: "Camera recordings",
    ItemKind.THUMBNAIL: "Preview images of camera recordings",
    ItemKind.SNAPSHOT: "Camera snapshots",
    ItemKind.LOCATION: "Location",
}
_SUBJECT_TITLES: dict[ProfileKind, str] = {
    ProfileKind.ADULT: "Adults",
    ProfileKind.CHILD: "Children",
}
_RULE_HEADERS = ("Data", "Purpose", "Business need", "Kept for at most")
_DAYS_PER_MONTH = 365.25 / 12


def format_age(age: timedelta) -> str:
    """A duration in the units people use: "30 days", "3 months (90 days)", "1 year (365 days)"."""
    days = age.days
    if days < 60:
        return "1 day" if days == 1 else f"{days} days"
    if days % 365 == 0:
        years = days // 365
        return f"{years} year{'s' if years > 1 else ''} ({days} days)"
    months = round(days / _DAYS_PER_MONTH)
    if abs(months * _DAYS_PER_MONTH - days) <= 3:
        return f"{months} months ({days} days)"
    return f"{days} days"


def format_hours(age: timedelta) -> str:
    """A short duration in whole hours: "1 hour", "24 hours"."""
    hours = int(age.total_seconds() // 3600)
    return "1 hour" if hours == 1 else f"{hours} hours"


def _sections(policy: Policy, *, now: datetime, completion_days: int) -> list[Section]:
    """What the notice says, once, for every rendering."""
    sections = [
        Section(
            title="",
            paragraphs=(
                "How long we keep the data your smart home collects, why we keep it, and "
                "how it is deleted. No data is kept indefinitely.",
            ),
        )
    ]
    for subject in ProfileKind:
        rows = tuple(
            (
                _KIND_LABELS.get(kind, kind.value),
                rule.purpose,
                rule.business_need,
                format_age(rule.max_age),
            )
            for kind in _ordered_kinds()
            if (rule := policy.rules.get((kind, subject))) is not None
        )
        sections.append(
            Section(
                title=_SUBJECT_TITLES.get(subject, subject.value),
                paragraphs=(
                    f"What we keep about {_SUBJECT_TITLES[subject].lower()} in the household, "
                    "why, and for how long at most.",
                ),
                table=Table(headers=_RULE_HEADERS, rows=rows),
            )
        )
    sections += [
        Section(
            title="Voice used in place of typing",
            paragraphs=(
                "When a device tells us that a spoken request, often a child's, was used "
                "only in place of typed words, we do not keep the recording: it is checked "
                "as it arrives and then discarded, and no copy of it is stored.",
                f"Its transcript is deleted {format_hours(policy.ephemeral_voice_max_age)} "
                "after it arrives, together with the record that the request was heard.",
                "Neither is ever used to train models or to identify anyone.",
            ),
        ),
        Section(title="Automatic deletion", paragraphs=_auto_delete_paragraphs()),
        Section(
            title="Inactive child profiles",
            paragraphs=(
                f"A child profile that has not been used for "
                f"{format_age(policy.inactive_child_after)} is identified as inactive, and "
                "we tell the child's parents before anything is deleted.",
                f"{_capitalised(format_age(policy.inactive_child_grace))} after it is "
                "identified, the profile's data is erased, unless a parent has chosen to "
                "keep the profile or it has been used again in the meantime. When a parent "
                "chooses to keep it, we record who chose, when and how.",
            ),
        ),
        Section(
            title="Contact details for parental consent",
            paragraphs=(
                "Contact details we collect only to ask a parent for consent are deleted "
                "if consent has not been given within "
                f"{format_age(policy.consent_contact_max_age)}.",
                f"Purpose: {policy.consent_contact_purpose}",
            ),
        ),
        Section(
            title="Erasure requests",
            paragraphs=(
                "You can ask at any time for your data, or your child's data, to be erased.",
                f"We complete an erasure request within {completion_days} days of receiving it.",
                "Every deletion is verified before it is called complete.",
                "When a request is complete you receive a receipt signed with Ed25519, with "
                "which you can check that it came from us and has not been altered.",
            ),
        ),
        Section(
            title="Legal holds",
            paragraphs=(
                "A legal hold suspends deletion of the data it covers until the hold "
                "expires. Every hold has an expiry date.",
                f"On {now:%Y-%m-%d}, {_count_holds(len(policy.active_holds(now)))} in force.",
            ),
        ),
        Section(
            title="About this notice",
            paragraphs=(
                f"This notice was generated from the retention policy {policy.source}, "
                f"SHA-256 {policy.sha256}. Deletion runs from the same policy.",
            ),
        ),
    ]
    return sections


def _ordered_kinds() -> list[ItemKind]:
    labelled = list(_KIND_LABELS)
    return labelled + [kind for kind in ItemKind if kind not in _KIND_LABELS]


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _count_holds(count: int) -> str:
    return "1 legal hold was" if count == 1 else f"{count} legal holds were"


def _choice_words(choice: str) -> str:
    interval = AUTO_DELETE_CHOICES[choice]
    return "never" if interval is None else f"after {format_age(interval)}"


def _auto_delete_paragraphs() -> tuple[str, ...]:
    adult = [_choice_words(c) for c in AUTO_DELETE_CHOICES]
    child = [_choice_words(c) for c in CHILD_AUTO_DELETE_CHOICES]
    refused = [c for c in AUTO_DELETE_CHOICES if c not in CHILD_AUTO_DELETE_CHOICES]
    for_children = f"For children: {_either(child)}"
    if refused:
        for_children += f"; {_either([f'“{_choice_words(c)}”' for c in refused])} is not offered"
    paragraphs = [
        "You can have recordings deleted automatically at a regular interval.",
        f"For adults: {_either(adult)}.",
        for_children + ".",
    ]
    paragraphs.append(
        "A choice can only shorten how long data is kept: whatever you choose, nothing is "
        "kept beyond the maximum ages above."
    )
    return tuple(paragraphs)


def _either(options: list[str]) -> str:
    if len(options) <= 1:
        return "".join(options)
    return ", ".join(options[:-1]) + " or " + options[-1]


def _settings_default_completion_days() -> int:
    default = Settings.model_fields["erasure_completion_days"].default
    assert isinstance(default, int)
    return default


def _prepare(
    policy: Policy, now: datetime | None, erasure_completion_days: int | None
) -> list[Section]:
    return _sections(
        policy,
        now=(now or datetime.now(UTC)).astimezone(UTC),
        completion_days=erasure_completion_days or _settings_default_completion_days(),
    )


def render_markdown(
    policy: Policy,
    *,
    now: datetime | None = None,
    erasure_completion_days: int | None = None,
) -> str:
    """The notice as Markdown (A7). `now` dates the count of active legal holds (default:
    the current time); `erasure_completion_days` defaults to the settings' default."""
    sections = _prepare(policy, now, erasure_completion_days)
    return to_markdown(Document(title=TITLE, sections=tuple(sections)))


def render_html(
    policy: Policy,
    *,
    now: datetime | None = None,
    erasure_completion_days: int | None = None,
) -> str:
    """The notice as one self-contained HTML5 document: no scripts, no external assets,
    every value escaped (A7). Arguments as for `render_markdown`."""
    sections = _prepare(policy, now, erasure_completion_days)
    return to_html(
        Document(title=TITLE, sections=tuple(sections)),
        title=TITLE,
        meta=[("policy-sha256", policy.sha256)],
        table_end="</tbody>\n</table>",
    )
