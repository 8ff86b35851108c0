"""`tutela exports`: list exports and erase the expired ones now (C6)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Copies of profiles' data that customers download.", no_args_is_help=True)


@app.command("list")
def list_exports(
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
) -> None:
    """Every household's exports: id, state, progress, size and expiry (no personal data)."""
    from sqlalchemy import select  # noqa: PLC0415

    from tutela.container import build  # noqa: PLC0415
    from tutela.exports import rules  # noqa: PLC0415
    from tutela.exports.models import Export  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        now = container.clock.now()
        with container.stores.session() as session:
            rows = session.scalars(
                select(Export).order_by(Export.requested_at.desc()).limit(limit)
            ).all()
            for e in rows:
                state = rules.shown_state(e.state, e.expires_at, now=now)
                expires = f"{e.expires_at:%Y-%m-%d %H:%M}" if e.expires_at else "-"
                typer.echo(
                    f"{e.id}  {state:<9} {e.items_done}/{e.items_total} items  "
                    f"{e.size} bytes  expires {expires}  {e.reason or ''}".rstrip()
                )
        if not rows:
            typer.echo("no exports")
    finally:
        container.close()


@app.command("expire")
def expire() -> None:
    """Erase now every package whose download link has expired (the worker does it too);
    the erasures' receipts follow once a worker has run them (`tutela erasure list`)."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.exports.worker import expire_due  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        erased = expire_due(container)
        container.erasure_pass()
    finally:
        container.close()
    typer.echo(f"{erased} expired packages erased")
