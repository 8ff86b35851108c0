"""The published staff-access notice, generated from the staff-access policy (R9).

One structured document is built from a `StaffAccessPolicy` and the moment it is
published; the HTML page, the Markdown text and the JSON answer are renderings of it,
so none can say something the policy does not. Each version is published once and
kept as published (`transparency.service.publish_notice`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tutela.households.models import CameraZone
from tutela.notices.document import Document, Section, Table, to_html, to_markdown
from tutela.retention.notice import format_age
from tutela.transparency.policy import StaffAccessPolicy
from tutela.transparency.rules import Condition
from tutela.vault.models import ItemKind

TITLE = "Staff access notice"
PAGE = "/notices/staff-access"

KIND_WORDS: dict[ItemKind, str] = {
    ItemKind.VOICE: "voice recordings",
    ItemKind.TRANSCRIPT: "transcripts of voice requests",
    ItemKind.VIDEO: "camera recordings",
    ItemKind.THUMBNAIL: "preview images of camera recordings",
    ItemKind.SNAPSHOT: "camera snapshots",
    ItemKind.LOCATION: "locations",
}
_ZONE_WORDS: dict[CameraZone, str] = {z: z.value.replace("_", " ") for z in CameraZone}


def _condition_words(condition: Condition, review: int | None) -> str:
    if condition is Condition.TICKET:
        return "A case number, recorded with every look."
    if condition is Condition.HUMAN_REVIEW_CONSENT:
        return "Your agreement to human review: without it, the look is refused."
    if condition is Condition.LEGAL_PROCESS:
        return "A court order or another legal obligation, checked by our privacy office."
    days = f"{review} day{'s' if review != 1 else ''}" if review else "a set time"
    return f"A review by our privacy office within {days} afterwards."


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _sentence(parts: list[str]) -> str:
    text = _join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def build_document(policy: StaffAccessPolicy, *, published_at: datetime) -> dict[str, Any]:
    """The notice of `policy` as published at `published_at`: what every rendering says."""
    operator = policy.operator
    purposes = policy.purposes
    role_rows = []
    for rule in policy.roles.values():
        sees = _sentence([KIND_WORDS[k] for k in rule.data]) if rule.data else "Nothing."
        why = (
            _sentence([purposes[p].title.lower() for p in rule.purposes])
            if rule.purposes
            else "Never."
        )
        role_rows.append([rule.title, rule.duties, sees, why])
    purpose_rows = []
    for purpose_rule in purposes.values():
        review = purpose_rule.review_within.days if purpose_rule.review_within else None
        needs = [_condition_words(c, review) for c in Condition if c in purpose_rule.requires]
        purpose_rows.append([purpose_rule.title, purpose_rule.condition, " ".join(needs)])
    zones = [_ZONE_WORDS[z] for z in policy.never_reviewable_zones]
    kept = format_age(policy.records_kept)
    sections: list[dict[str, Any]] = [
        {
            "title": "",
            "paragraphs": [
                f"Who at {operator} can see the recordings, camera images and locations your "
                "smart home collects, why, and under which conditions.",
                "Nobody else can: a role, a purpose or a kind of data that this notice does "
                "not name opens nothing.",
            ],
            "table": None,
        },
        {
            "title": f"Roles at {operator}",
            "paragraphs": [
                "Every role at the operator, including those that can see none of your data. "
                "Employees whose role can see your data sign in with a passkey or a "
                "security key."
            ],
            "table": {
                "headers": ["Role", "What they do", "What they can see", "For"],
                "rows": role_rows,
            },
        },
        {
            "title": "When an employee may look",
            "paragraphs": [
                "A look is allowed only for one of these purposes, and only once what it "
                "needs is in place; everything else is refused."
            ],
            "table": {
                "headers": ["Purpose", "When", "What it needs"],
                "rows": purpose_rows,
            },
        },
        {
            "title": "Rooms never shown",
            "paragraphs": [
                f"Recordings from cameras in the {_join(zones)} are never shown to an "
                "employee, for any purpose."
            ],
            "table": None,
        },
        {
            "title": "Every look is recorded",
            "paragraphs": [
                "Each look by an employee is recorded before anything is shown: their role, "
                "a reference that does not name them, what they looked at, when, why, and "
                "the case number.",
                "You can see every look at your recordings, and a guardian at their "
                "children's, in the console's privacy pages and in the app.",
                f"We keep each record for {kept}, and delete it sooner when the profile it "
                "is about is erased.",
            ],
            "table": None,
        },
        {
            "title": "About this notice",
            "paragraphs": [
                f"Version {policy.version}, in force since {published_at:%Y-%m-%d}. "
                f"Generated from the staff-access policy {policy.source}, SHA-256 "
                f"{policy.sha256}; every recorded look is checked against the same policy.",
                f"Earlier versions stay published at {PAGE}/versions/NUMBER.",
            ],
            "table": None,
        },
    ]
    return {
        "title": TITLE,
        "version": policy.version,
        "operator": operator,
        "published_at": published_at.isoformat(),
        "policy_sha256": policy.sha256,
        "source": policy.source,
        "access_records_kept_days": policy.records_kept.days,
        "never_reviewable_zones": [z.value for z in policy.never_reviewable_zones],
        "roles": [
            {
                "id": r.role.value,
                "title": r.title,
                "duties": r.duties,
                "data": [k.value for k in r.data],
                "purposes": [p.value for p in r.purposes],
            }
            for r in policy.roles.values()
        ],
        "purposes": [
            {
                "id": p.purpose.value,
                "title": p.title,
                "condition": p.condition,
                "requires": [c.value for c in Condition if c in p.requires],
                "review_within_days": p.review_within.days if p.review_within else None,
            }
            for p in purposes.values()
        ],
        "sections": sections,
    }


def _as_document(document: dict[str, Any]) -> Document:
    """The sections of a built (or published JSON) notice as the shared renderer's document."""
    sections = []
    for section in document["sections"]:
        table = section["table"]
        sections.append(
            Section(
                title=str(section["title"]),
                paragraphs=tuple(str(p) for p in section["paragraphs"]),
                table=None
                if table is None
                else Table(
                    headers=tuple(str(c) for c in table["headers"]),
                    rows=tuple(tuple(str(c) for c in row) for row in table["rows"]),
                ),
            )
        )
    return Document(title=str(document["title"]), sections=tuple(sections))


def render_markdown(document: dict[str, Any]) -> str:
    """The notice as Markdown, every value escaped."""
    return to_markdown(_as_document(document))


def render_html(document: dict[str, Any]) -> str:
    """The notice as one self-contained HTML5 document: no scripts, no external assets,
    every value escaped."""
    return to_html(
        _as_document(document),
        title=f"{document['title']} · {document['operator']}",
        meta=[
            ("notice-version", str(document["version"])),
            ("policy-sha256", str(document["policy_sha256"])),
        ],
    )
