"""`tutela staff-access`: check the staff-access policy file and print the notice generated
from it, before it is deployed (R9)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tutela.cli_support import load_or_exit
from tutela.transparency.policy import (
    StaffAccessPolicy,
    StaffAccessPolicyError,
    load_staff_access,
)

app = typer.Typer(help="The staff-access policy and its public notice.", no_args_is_help=True)

PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        dir_okay=False,
        help="The policy file (TOML). Default: TUTELA_STAFF_ACCESS_POLICY_FILE, else the "
        "packaged policy.",
    ),
]


class NoticeFormat(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"
    JSON = "json"


def _policy(path: Path | None) -> StaffAccessPolicy:
    if path is None:
        from tutela.settings import Settings  # noqa: PLC0415

        path = Settings().staff_access_policy_file
    return load_or_exit(load_staff_access, path, what="the policy", refused=StaffAccessPolicyError)


@app.command()
def check(policy: PolicyOption = None) -> None:
    """Check a policy file; every problem is listed (exit status 2)."""
    loaded = _policy(policy)
    seeing = sum(1 for r in loaded.roles.values() if r.data)
    typer.echo(
        f"policy OK: version {loaded.version}, {len(loaded.roles)} roles ({seeing} can see "
        f"customer data), {len(loaded.purposes)} purposes"
    )
    typer.echo(f"sha256 {loaded.sha256}")


@app.command()
def notice(
    format_: Annotated[
        NoticeFormat, typer.Option("--format", help="markdown, a self-contained HTML page, json.")
    ] = NoticeFormat.MARKDOWN,
    policy: PolicyOption = None,
) -> None:
    """Print the notice the policy would publish today. The served notice is published
    once per version and kept (/notices/staff-access/versions/N)."""
    import json  # noqa: PLC0415

    from tutela.transparency.notice import (  # noqa: PLC0415
        build_document,
        render_html,
        render_markdown,
    )

    document = build_document(_policy(policy), published_at=datetime.now(UTC))
    if format_ is NoticeFormat.JSON:
        typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
    elif format_ is NoticeFormat.HTML:
        typer.echo(render_html(document), nl=False)
    else:
        typer.echo(render_markdown(document), nl=False)
