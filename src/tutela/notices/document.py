"""One renderer for the published notices: sections of paragraphs and tables to Markdown and HTML.

The retention notice (A7), the staff-access notice (R9) and the consent notice (C3) are
each built from the file that runs them; this module only turns what they say into text,
so the three share one escaping and one page: no scripts, no external assets, every value
escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    table: Table | None = None


@dataclass(frozen=True)
class Document:
    """A notice's title and sections; the last section is the "about" footer in HTML."""

    title: str
    sections: tuple[Section, ...]


# --- Markdown -----------------------------------------------------------------------------

# Backslash-escape what Markdown would read as markup (CommonMark allows it before any
# ASCII punctuation), including < and & so a renderer never passes HTML through.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def md(text: str) -> str:
    """`text` on one line, with Markdown's markup characters escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def to_markdown(document: Document) -> str:
    """The document as Markdown, every value escaped."""
    lines = [f"# {md(document.title)}", ""]
    for section in document.sections:
        if section.title:
            lines += [f"## {md(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [md(paragraph), ""]
        if section.table is not None:
            lines.append("| " + " | ".join(md(h) for h in section.table.headers) + " |")
            lines.append("|" + " --- |" * len(section.table.headers))
            for row in section.table.rows:
                lines.append("| " + " | ".join(md(cell) for cell in row) + " |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML ---------------------------------------------------------------------------------

_STYLE_RULES = """
body { font-family: system-ui, sans-serif; line-height: 1.5; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #c8c8c8; padding: 0.4rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f2f2f2; }
"""
_STYLE_FOOTER = (
    "footer { margin-top: 2rem; font-size: 0.9rem; color: #555; overflow-wrap: anywhere; }\n"
)


def h(text: str) -> str:
    """`text` escaped for HTML text and attribute values."""
    return html.escape(text, quote=True)


def header_row(headers: Sequence[str]) -> str:
    """A table's `<thead>`, each heading a column header."""
    return (
        "<thead><tr>" + "".join(f'<th scope="col">{h(c)}</th>' for c in headers) + "</tr></thead>"
    )


def sections_html(sections: Sequence[Section], *, table_end: str = "</tbody></table>") -> list[str]:
    """The lines of `sections`, each in a `<section>`; a table's first column heads its row.

    `table_end` is how a table is closed ("</tbody>\\n</table>" in the retention notice),
    kept as published so a notice's bytes do not change."""
    body: list[str] = []
    for section in sections:
        body.append("<section>")
        if section.title:
            body.append(f"<h2>{h(section.title)}</h2>")
        body += [f"<p>{h(p)}</p>" for p in section.paragraphs]
        if section.table is not None:
            body.append("<table>")
            body.append(header_row(section.table.headers))
            body.append("<tbody>")
            for first, *rest in section.table.rows:
                body.append(
                    f'<tr><th scope="row">{h(first)}</th>'
                    + "".join(f"<td>{h(cell)}</td>" for cell in rest)
                    + "</tr>"
                )
            body.append(table_end)
        body.append("</section>")
    return body


def page(
    *,
    title: str,
    meta: Sequence[tuple[str, str]],
    main: Sequence[str],
    footer: Sequence[str],
    extra_style: str = "",
) -> str:
    """One self-contained HTML5 document. `title` and `meta` values are escaped here;
    `main` and `footer` are lines of HTML already escaped; `extra_style` adds CSS rules."""
    head_meta = "".join(f'<meta name="{h(name)}" content="{h(value)}">\n' for name, value in meta)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # Nothing may load or run: the notice is text and one inline style sheet.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"{head_meta}"
        f"<title>{h(title)}</title>\n"
        f"<style>{_STYLE_RULES}{extra_style}{_STYLE_FOOTER}</style>\n"
        "</head>\n"
        "<body>\n<main>\n"
        + "\n".join(main)
        + "\n</main>\n<footer>\n"
        + "\n".join(footer)
        + "\n</footer>\n</body>\n</html>\n"
    )


def to_html(
    document: Document,
    *,
    title: str,
    meta: Sequence[tuple[str, str]] = (),
    table_end: str = "</tbody></table>",
) -> str:
    """The document as one HTML page titled `title`: an `<h1>` and a `<section>` per
    section, the last section in the footer."""
    *sections, about = document.sections
    main = [f"<h1>{h(document.title)}</h1>", *sections_html(sections, table_end=table_end)]
    footer = [f"<h2>{h(about.title)}</h2>", *(f"<p>{h(p)}</p>" for p in about.paragraphs)]
    return page(title=title, meta=meta, main=main, footer=footer)
