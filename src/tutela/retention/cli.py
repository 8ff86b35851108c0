"""`tutela retention`: check the policy file and publish the notice generated from it (A7, C9)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tutela.cli_support import load_or_exit
from tutela.retention.policy import Policy, PolicyError, load_policy

app = typer.Typer(help="Retention rules, the published notice, and sweeps.", no_args_is_help=True)

PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        dir_okay=False,
        help="The policy file (TOML). Default: TUTELA_RETENTION_POLICY_FILE, else the "
        "packaged policy.",
    ),
]


class NoticeFormat(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


def _policy(path: Path | None) -> Policy:
    """Load the named policy, else the configured one; a bad file ends the command."""
    if path is None:
        from tutela.settings import Settings  # noqa: PLC0415

        path = Settings().retention_policy_file
    return load_or_exit(load_policy, path, what="the policy", refused=PolicyError)


@app.command()
def check(policy: PolicyOption = None) -> None:
    """Check a policy file; every problem is listed with its line (exit status 2)."""
    loaded = _policy(policy)
    active = len(loaded.active_holds(datetime.now(UTC)))
    typer.echo(
        f"policy OK: {len(loaded.rules)} rules, {len(loaded.holds)} legal holds ({active} active)"
    )
    typer.echo(f"sha256 {loaded.sha256}")


@app.command()
def notice(
    format_: Annotated[
        NoticeFormat, typer.Option("--format", help="markdown or a self-contained HTML page.")
    ] = NoticeFormat.MARKDOWN,
    policy: PolicyOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", dir_okay=False, help="Write the notice here, not to stdout."),
    ] = None,
) -> None:
    """Print or write the retention notice, generated from the policy that runs deletion."""
    from tutela.retention.notice import render_html, render_markdown  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    loaded = _policy(policy)
    render = render_html if format_ is NoticeFormat.HTML else render_markdown
    text = render(
        loaded,
        now=datetime.now(UTC),
        erasure_completion_days=Settings().erasure_completion_days,
    )
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"Notice written to {output} (policy sha256 {loaded.sha256}).")


@app.command()
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Find and count everything; change nothing.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(help="Then run the requested erasures here until none is due (A8)."),
    ] = True,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Items per batch. Default: TUTELA_RETENTION_BATCH_SIZE."),
    ] = None,
) -> None:
    """Run one retention sweep now: expired items, inactive children, consent contacts
    (A1-A3, A6, C5, C9). Every deletion goes through the erasure engine, with a receipt."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.retention.sweep import run_sweep  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        report = run_sweep(container, dry_run=dry_run, batch_size=batch_size)
        for line in report.lines():
            typer.echo(line)
        if wait and not dry_run and report.requests:
            completed = failed = 0
            while True:
                done = container.erasure.run_pending(limit=50)
                completed += done.completed
                failed += done.failed
                if not (done.completed or done.advanced or done.waiting or done.failed):
                    break
            typer.echo(
                f"erasures completed: {completed}" + (f", failed: {failed}" if failed else "")
            )
    finally:
        container.close()


@app.command()
def explain() -> None:
    """Print the store's plans for the statements a sweep finds expired items with
    (EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN on SQLite). None should read `items` whole:
    each searches an index (docs/erasure.md shows them at 1,000,000 items)."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.retention.sweep import explain_selection  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    settings = Settings()
    container = build(settings)
    try:
        with container.stores.main.connect() as conn:
            plans = explain_selection(
                conn,
                container.policy,
                container.clock.now(),
                batch_size=settings.retention_batch_size,
            )
            conn.rollback()
    finally:
        container.close()
    for name, plan in plans.items():
        typer.echo(f"{name}:")
        for line in plan:
            typer.echo(f"    {line}")
