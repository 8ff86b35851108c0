"""`tutela consent notice`: the consent notice generated from a purposes file (C3), this
version's or, from an older copy of the file, any earlier one."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Consent purposes and the notice generated from them.", no_args_is_help=True)


class NoticeFormat(StrEnum):
    HTML = "html"
    JSON = "json"


@app.command()
def notice(
    format_: Annotated[
        NoticeFormat, typer.Option("--format", help="a self-contained HTML page, or JSON.")
    ] = NoticeFormat.HTML,
    purposes: Annotated[
        Path | None,
        typer.Option(
            "--purposes",
            exists=True,
            dir_okay=False,
            help="A purposes file (TOML); default: the configured or packaged one.",
        ),
    ] = None,
) -> None:
    """Print the consent notice generated from the purposes file the ledger runs on."""
    from tutela.consent.notice import as_json, render_html  # noqa: PLC0415
    from tutela.consent.purposes import PurposesError, load_purposes  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    try:
        catalogue = load_purposes(purposes or Settings().consent_purposes_file)
    except PurposesError as exc:
        for problem in exc.problems:
            typer.echo(f"{exc.source}: {problem}", err=True)
        raise typer.Exit(2) from None
    if format_ is NoticeFormat.JSON:
        typer.echo(json.dumps(as_json(catalogue), indent=2))
    else:
        typer.echo(render_html(catalogue), nl=False)
