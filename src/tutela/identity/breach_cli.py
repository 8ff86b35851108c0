"""`tutela breach`: fill the breached-password range store (S5, R7)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tutela.core.errors import InvalidInput

app = typer.Typer(
    help="The breached-password store: import Pwned Passwords files, seed the common list.",
    no_args_is_help=True,
)

# Exit status for input the command refuses, the same Click gives a usage error.
_BAD_INPUT = 2


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            readable=True,
            help="A HASH40[:COUNT] file, a range file ABCDE.txt, or a directory of them.",
        ),
    ],
    prefix: Annotated[
        str | None,
        typer.Option(help="The 5-hex prefix of a range file whose name does not say it."),
    ] = None,
) -> None:
    """Import SHA-1 hashes from Have I Been Pwned; a row already there keeps the larger count."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.identity.breached import import_path  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        result = import_path(container.stores.main_sessions, path, prefix=prefix)
    except InvalidInput as exc:
        typer.echo(f"Nothing imported: {exc.detail}", err=True)
        raise typer.Exit(_BAD_INPUT) from None
    finally:
        container.close()
    typer.echo(f"{result.lines} lines read, {result.stored} stored, {result.skipped} skipped.")


@app.command("seed-default")
def seed_default() -> None:
    """Load the 19,640 common passwords Django ships, when the store is empty."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.identity import breached  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        added = breached.seed_default(container.stores.main_sessions)
    finally:
        container.close()
    if added:
        typer.echo(f"{added} common passwords added to the breach store.")
    else:
        typer.echo("The breach store already holds ranges; nothing added.")
