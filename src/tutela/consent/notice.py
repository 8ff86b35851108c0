"""The published consent notice, generated from the purposes file that the ledger runs on
(C3, C4, C6).

HTML and JSON are two renderings of one `ConsentNotice` built from a `Catalogue`, so the
notice cannot say something the ledger does not do: the purposes and their descriptions,
the state of an adult who has not chosen, that nothing is done with a child's information
before a parent's consent is verified, that sharing is asked for on its own, and the
notice version that any consent is recorded under. Nothing in it is written by hand.

Every version is kept: the notice is a pure function of the purposes file, and the file
is versioned (the packaged one in the repository, an operator's copy under their own
version control); `about` names the file's SHA-256, and `tutela consent notice --purposes
FILE` renders any older version of it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from tutela.consent.purposes import Catalogue, Purpose
from tutela.notices.document import h, header_row, page

TITLE = "Consent notice"
CHILDREN = "Only with a parent's verified consent"


@dataclass(frozen=True)
class PurposeNotice:
    name: str
    title: str
    description: str
    adult_default: bool
    adults: str
    """An adult's state before choosing, in words."""
    children: str
    """A child's, in words: always off until a parent's consent is verified (C3)."""
    child_needs_parental_consent: bool
    separate: bool
    changed_in: int


@dataclass(frozen=True)
class ConsentNotice:
    title: str
    notice_version: int
    intro: tuple[str, ...]
    purposes: tuple[PurposeNotice, ...]
    rules: tuple[str, ...]
    about: tuple[str, ...]
    source: str
    sha256: str


def _purpose(p: Purpose) -> PurposeNotice:
    return PurposeNotice(
        name=p.name,
        title=p.title,
        description=p.description,
        adult_default=p.adult_default,
        adults="On unless you turn it off" if p.adult_default else "Off unless you turn it on",
        children=CHILDREN,
        child_needs_parental_consent=True,
        separate=p.separate,
        changed_in=p.changed_in,
    )


def build(catalogue: Catalogue) -> ConsentNotice:
    """What the notice says, once, for every rendering."""
    purposes = tuple(_purpose(p) for p in catalogue.purposes.values())
    separate = [p.title for p in purposes if p.separate]
    rules = [
        "Nothing is done with a child's information, for any purpose, before a parent's "
        "consent is verified; a parent then chooses each purpose for the child.",
        "You can turn any purpose off at any time; it counts from that moment, everywhere.",
        "You can stop all recording of yourself, or of your child: every purpose is turned "
        "off and your home's devices can no longer upload anything of that person. What is "
        "already kept stays until it is deleted, which you can ask for at any time.",
        "Each parent of a child is told of every change to the child's consent; an adult is "
        "sent a confirmation of each change of their own.",
        "Every choice is recorded with who made it, when, how, and the version of this "
        "notice it was made under; the console shows that history.",
        f"When a new version of this notice changes what a purpose means, consent given "
        f"under an older version no longer counts for that purpose, and you are asked "
        f"again. This is version {catalogue.notice_version}.",
    ]
    if separate:
        rules.insert(
            1,
            f"{' and '.join(separate)}: asked for on its own, never together with another "
            "purpose, and off until you turn it on.",
        )
    named = f" {catalogue.source}" if catalogue.source else ""
    about = (
        f"This notice was generated from the consent purposes file{named} (SHA-256 "
        f"{catalogue.sha256 or 'unknown'}), the same file consent is checked against.",
        "Earlier versions are kept: the purposes file is versioned, and each earlier "
        "version of this notice is generated again from that version of the file.",
    )
    return ConsentNotice(
        title=TITLE,
        notice_version=catalogue.notice_version,
        intro=(
            "What Tutela may do with the recordings, clips, transcripts and locations your "
            "smart home collects, and what it does only if you say yes.",
        ),
        purposes=purposes,
        rules=tuple(rules),
        about=about,
        source=catalogue.source,
        sha256=catalogue.sha256,
    )


def as_json(catalogue: Catalogue) -> dict[str, object]:
    """The notice as a JSON object (C3): the same content as the HTML."""
    notice = build(catalogue)
    return {
        "title": notice.title,
        "notice_version": notice.notice_version,
        "intro": list(notice.intro),
        "purposes": [p.__dict__ for p in notice.purposes],
        "children_need_parental_consent_for": [
            p.name for p in notice.purposes if p.child_needs_parental_consent
        ],
        "rules": list(notice.rules),
        "about": list(notice.about),
        "source": notice.source,
        "sha256": notice.sha256,
    }


def render_html(catalogue: Catalogue) -> str:
    """The notice as one self-contained HTML5 document: no scripts, no external assets,
    every value escaped (C3)."""
    notice = build(catalogue)
    rows = []
    for p in notice.purposes:
        alone = " Asked for on its own." if p.separate else ""
        rows.append(
            f'<tr id="{h(p.name)}"><th scope="row">{h(p.title)}</th>'
            f"<td>{h(p.description)}{h(alone)}</td>"
            f"<td>{h(p.adults)}</td><td>{h(p.children)}</td>"
            f"<td>{p.changed_in}</td></tr>"
        )
    body = [
        f"<h1>{h(notice.title)}, version {notice.notice_version}</h1>",
        *(f"<p>{h(p)}</p>" for p in notice.intro),
        "<section>",
        "<h2>What we ask your consent for</h2>",
        '<div class="wide"><table>',
        header_row(
            (
                "Purpose",
                "What it means",
                "Adults, before choosing",
                "Children",
                "Last changed in version",
            )
        ),
        "<tbody>",
        *rows,
        "</tbody></table></div>",
        "</section>",
        "<section>",
        "<h2>Your choices</h2>",
        "<ul>",
        *(f"<li>{h(r)}</li>" for r in notice.rules),
        "</ul>",
        "</section>",
    ]
    footer = ["<h2>About this notice</h2>", *(f"<p>{h(p)}</p>" for p in notice.about)]
    return page(
        title=f"{notice.title} · Tutela",
        meta=[
            ("notice-version", str(notice.notice_version)),
            ("purposes-sha256", notice.sha256),
        ],
        main=body,
        footer=footer,
        # The purposes table scrolls on its own on a narrow screen.
        extra_style=".wide { overflow-x: auto; }\n",
    )
