"""`tutela consent`: the purposes asked for, the consent notice generated from them, and
one profile's consent as the ledger derives it, with its parental consents (C3, C4, C5).
Prints no personal data: ids, purposes, methods, times."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from tutela.cli_support import BAD_FILE, load_or_exit
from tutela.consent.purposes import Catalogue, PurposesError, load_purposes
from tutela.settings import Settings

app = typer.Typer(help="Consent: purposes, and a profile's consent.", no_args_is_help=True)


def _catalogue(path: Path | None, *, describe: Callable[[PurposesError], str] = str) -> Catalogue:
    """The named purposes file, else the configured one; a bad file ends the command."""
    return load_or_exit(
        load_purposes,
        path or Settings().consent_purposes_file,
        what="the purposes file",
        refused=PurposesError,
        describe=describe,
    )


def _each_problem(exc: PurposesError) -> str:
    return "\n".join(f"{exc.source}: {problem}" for problem in exc.problems)


@app.command()
def purposes(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            dir_okay=False,
            help="A purposes file (TOML) to check. Default: TUTELA_CONSENT_PURPOSES_FILE, "
            "else the packaged one.",
        ),
    ] = None,
) -> None:
    """The purposes consent is asked for, under which notice version; checks a file
    (every problem listed, exit status 2)."""
    catalogue = _catalogue(file)
    typer.echo(f"notice version {catalogue.notice_version}")
    for p in catalogue.purposes.values():
        flags = ["on for adults" if p.adult_default else "off until granted"]
        if p.separate:
            flags.append("asked for on its own (C4)")
        typer.echo(f"  {p.name:<24} {', '.join(flags)}; changed in notice {p.changed_in}")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


@app.command()
def show(
    profile: Annotated[uuid.UUID, typer.Option("--profile", help="The profile's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One profile's consent per purpose, its parental consents (method, verified, when;
    never their evidence) and asks for consent (counts, never addresses)."""
    from tutela.consent.ledger import Subject  # noqa: PLC0415
    from tutela.consent.parental import attempts_of  # noqa: PLC0415
    from tutela.container import build  # noqa: PLC0415
    from tutela.households.models import Profile  # noqa: PLC0415
    from tutela.retention.models import ConsentContact  # noqa: PLC0415

    container = build(Settings())
    try:
        now = container.clock.now()
        with container.stores.session() as session:
            row = session.scalar(select(Profile).where(Profile.id == profile))
            if row is None:
                typer.echo("error: no such profile", err=True)
                raise typer.Exit(BAD_FILE)
            subject = Subject.of(row)
            state = container.consent.state(session, subject, now)
            consents = attempts_of(session, subject)
            asks = list(
                session.scalars(
                    select(ConsentContact.consented_at).where(
                        ConsentContact.household_id == subject.household_id,
                        ConsentContact.child_profile_id == subject.profile_id,
                    )
                )
            )
        open_asks = sum(1 for a in asks if a is None)
        report: dict[str, Any] = {
            "profile": str(profile),
            "kind": subject.kind,
            "notice_version": container.consent.catalogue.notice_version,
            "purposes": {
                name: {"allowed": d.allowed, "reason": d.reason.value, "since": d.since}
                for name, d in state.items()
            },
            "parental_consents": [
                {
                    "id": str(c.id),
                    "method": c.method,
                    "verified": c.verified,
                    "at": c.at,
                    "notice_version": c.notice_version,
                    "guardian": f"account:{c.guardian_account_id}",
                }
                for c in consents
            ],
            "asks": {"open": open_asks, "answered": len(asks) - open_asks},
        }
    finally:
        container.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(f"profile {profile} ({subject.kind}), notice version {report['notice_version']}")
    for name, d in state.items():
        allowed = "allowed" if d.allowed else "not allowed"
        typer.echo(f"  {name:<24} {allowed:<12} {d.reason.value:<26} since {_when(d.since)}")
    if subject.is_child:
        typer.echo(f"parental consents: {len(consents)}")
        for c in consents:
            verified = "verified" if c.verified else "failed"
            typer.echo(
                f"  {c.id}  {c.method:<20} {verified:<9} {_when(c.at)}  "
                f"guardian account:{c.guardian_account_id}"
            )
        typer.echo(f"asks for consent: {open_asks} open, {len(asks) - open_asks} answered")


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

    catalogue = _catalogue(purposes, describe=_each_problem)
    if format_ is NoticeFormat.JSON:
        typer.echo(json.dumps(as_json(catalogue), indent=2))
    else:
        typer.echo(render_html(catalogue), nl=False)
