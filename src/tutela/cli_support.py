"""What Tutela's commands share: loading an operator's file and refusing a bad one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

# Exit status for a file a command refuses, the same Click gives a usage error.
BAD_FILE = 2

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def load_or_exit(
    load: Callable[[Path | None], T],
    path: Path | None,
    *,
    what: str,
    refused: type[E],
    describe: Callable[[E], str] = str,
) -> T:
    """`load(path)`, or end the command with exit status 2: a `refused` error prints
    `describe(error)` (every problem the loader found), an unreadable file says so.
    `what` names the file in that message ("the policy"). A `path` of None is the
    loader's packaged default."""
    try:
        return load(path)
    except refused as exc:
        typer.echo(describe(exc), err=True)
        raise typer.Exit(BAD_FILE) from None
    except OSError as exc:
        typer.echo(f"cannot read {what} {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(BAD_FILE) from None
