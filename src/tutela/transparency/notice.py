"""The published staff-access notice, generated from the staff-access policy (R9).

One structured document is built from a `StaffAccessPolicy` and the moment it is
published; the HTML page, the Markdown text and the JSON answer are renderings of it,
so none can say something the policy does not. Each version is published once and
kept as published (`transparency.service.publish_notice`).
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from tutela.households.models import CameraZone
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


# --- Markdown -----------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def _md(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def render_markdown(document: dict[str, Any]) -> str:
    """The notice as Markdown, every value escaped."""
    lines = [f"# {_md(document['title'])}", ""]
    for section in document["sections"]:
        if section["title"]:
            lines += [f"## {_md(section['title'])}", ""]
        for paragraph in section["paragraphs"]:
            lines += [_md(paragraph), ""]
        table = section["table"]
        if table is not None:
            lines.append("| " + " | ".join(_md(h) for h in table["headers"]) + " |")
            lines.append("|" + " --- |" * len(table["headers"]))
            for row in table["rows"]:
                lines.append("| " + " | ".join(_md(cell) for cell in row) + " |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML ---------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.5; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #c8c8c8; padding: 0.4rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f2f2f2; }
footer { margin-top: 2rem; font-size: 0.9rem; color: #555; overflow-wrap: anywhere; }
"""


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(document: dict[str, Any]) -> str:
    """The notice as one self-contained HTML5 document: no scripts, no external assets,
    every value escaped."""
    sections = list(document["sections"])
    about = sections.pop()
    body: list[str] = [f"<h1>{_h(document['title'])}</h1>"]
    for section in sections:
        body.append("<section>")
        if section["title"]:
            body.append(f"<h2>{_h(section['title'])}</h2>")
        body += [f"<p>{_h(p)}</p>" for p in section["paragraphs"]]
        table = section["table"]
        if table is not None:
            body.append("<table>")
            body.append(
                "<thead><tr>"
                + "".join(f'<th scope="col">{_h(h)}</th>' for h in table["headers"])
                + "</tr></thead>"
            )
            body.append("<tbody>")
            for first, *rest in table["rows"]:
                body.append(
                    f'<tr><th scope="row">{_h(first)}</th>'
                    + "".join(f"<td>{_h(cell)}</td>" for cell in rest)
                    + "</tr>"
                )
            body.append("</tbody></table>")
        body.append("</section>")
    footer = [f"<h2>{_h(about['title'])}</h2>"] + [f"<p>{_h(p)}</p>" for p in about["paragraphs"]]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # Nothing may load or run: the notice is text and one inline style sheet.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f'<meta name="notice-version" content="{_h(document["version"])}">\n'
        f'<meta name="policy-sha256" content="{_h(document["policy_sha256"])}">\n'
        f"<title>{_h(document['title'])} · {_h(document['operator'])}</title>\n"
        f"<style>{_STYLE}</style>\n"
        "</head>\n"
        "<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n<footer>\n"
        + "\n".join(footer)
        + "\n</footer>\n</body>\n</html>\n"
    )
