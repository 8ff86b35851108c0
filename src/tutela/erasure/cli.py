"""`tutela erasure …` and `tutela backup restore-check`: the operator's side of erasure."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import select

from tutela.settings import Settings

if TYPE_CHECKING:
    from tutela.container import Container

app = typer.Typer(help="Erasure requests: make one, follow them, run them, their consumers.")
backup_app = typer.Typer(help="Backups of the main database: what to do after a restore.")


def _container() -> Container:
    from tutela.container import build  # noqa: PLC0415

    return build(Settings())


def _drain(container: Container, rounds: int = 10_000) -> int:
    """Run due jobs until none is left (or only jobs waiting on a consumer remain)."""
    completed = 0
    for _ in range(rounds):
        report = container.erasure.run_pending(limit=50)
        completed += report.completed
        if not (report.completed or report.advanced):
            break
    return completed


@app.command("request")
def request(
    household: Annotated[uuid.UUID, typer.Option(help="The household's id.")],
    scope: Annotated[str, typer.Option(help="item, items, profile or household.")],
    profile: Annotated[uuid.UUID | None, typer.Option(help="The profile (items, profile).")] = None,
    item: Annotated[uuid.UUID | None, typer.Option(help="The item (item scope).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="A kind of data (repeat).")] = None,
    since: Annotated[datetime | None, typer.Option(help="From (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until (UTC).")] = None,
    wait: Annotated[bool, typer.Option(help="Run the job to completion here.")] = True,
) -> None:
    """Request an erasure as the privacy office (a request by mail, a regulator's order)."""
    from tutela.core.clock import as_utc  # noqa: PLC0415
    from tutela.core.errors import TutelaError  # noqa: PLC0415
    from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind  # noqa: PLC0415
    from tutela.erasure.scope import Requester, Scope  # noqa: PLC0415

    container = _container()
    try:
        try:
            target = Scope(
                kind=ScopeKind(scope),
                household_id=household,
                profile_id=profile,
                item_id=item,
                kinds=tuple(kind or ()),
                since=as_utc(since) if since else None,
                until=as_utc(until) if until else None,
            )
            row = container.erasure.request(
                target,
                Requester(RequesterKind.PRIVACY_OFFICER, "operator:cli"),
                hold=container.hold,
            )
        except (TutelaError, ValueError) as exc:
            typer.echo(f"error: {getattr(exc, 'detail', 'invalid scope')}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"Erasure request {row.id}: {row.status}, complete by {row.complete_by:%Y-%m-%d}."
        )
        if wait:
            _drain(container)
            with container.stores.session() as session:
                done = session.get(ErasureRequest, row.id)
                assert done is not None
                typer.echo(f"Now {done.status} (step {done.step}).")
    finally:
        container.close()


@app.command("batch")
def request_batch(
    items: Annotated[
        typer.FileText,
        typer.Option(help="A file of item ids, one per line (- for standard input)."),
    ],
    wait: Annotated[bool, typer.Option(help="Run the jobs to completion here.")] = True,
) -> None:
    """Erase many items across households as the privacy office (a disgorgement: every
    recording a model was trained on without consent), in batch jobs of up to
    TUTELA_ERASURE_BATCH_SIZE items, each with one receipt counting each subject apart.
    Items under a legal hold are left out and counted; unknown ids are counted too."""
    from tutela.erasure.models import RequesterKind  # noqa: PLC0415
    from tutela.erasure.scope import Member, Requester  # noqa: PLC0415
    from tutela.vault.models import MediaItem  # noqa: PLC0415

    wanted: set[uuid.UUID] = set()
    for number, line in enumerate(items, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            wanted.add(uuid.UUID(text))
        except ValueError:
            typer.echo(f"error: line {number} is not an item id", err=True)
            raise typer.Exit(2) from None
    container = _container()
    try:
        members: list[Member] = []
        ids = sorted(wanted)
        with container.stores.session() as session:
            for start in range(0, len(ids), 1000):
                part = ids[start : start + 1000]
                rows = session.execute(
                    select(MediaItem.household_id, MediaItem.profile_id, MediaItem.id).where(
                        MediaItem.id.in_(part)
                    )
                )
                members += [Member(r.household_id, r.profile_id, r.id) for r in rows]
        outcome = container.erasure.request_batch(
            members,
            Requester(RequesterKind.PRIVACY_OFFICER, "operator:cli"),
            hold=container.hold,
        )
        typer.echo(
            f"{len(outcome.requests)} batch requests for {len(members) - outcome.held} items; "
            f"{outcome.held} under a legal hold, {len(wanted) - len(members)} not found."
        )
        for request_id in outcome.requests:
            typer.echo(f"  {request_id}")
        if wait:
            typer.echo(f"{_drain(container)} erasures completed.")
    finally:
        container.close()


@app.command("list")
def list_requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests not complete.")] = False,
) -> None:
    """Requests with their status, step and deadlines (newest first). `--open`: every
    request not complete, failed and blocked ones included (they wait for an operator)."""
    from tutela.erasure.jobs import OPEN  # noqa: PLC0415
    from tutela.erasure.models import ErasureRequest  # noqa: PLC0415

    container = _container()
    try:
        with container.stores.session() as session:
            query = select(ErasureRequest).order_by(ErasureRequest.requested_at.desc()).limit(500)
            if open_only:
                query = query.where(ErasureRequest.status.in_(OPEN))
            for row in session.scalars(query):
                warn = (
                    " WARNING: past 80% of its limit"
                    if row.warned_at and not row.completed_at
                    else ""
                )
                error = f" error={row.last_error}" if row.status == "failed" else ""
                typer.echo(
                    f"{row.id}  {row.scope_kind:9} {row.status:9} step={row.step:10} "
                    f"by={row.requester_kind:15} requested={row.requested_at:%Y-%m-%d} "
                    f"complete_by={row.complete_by:%Y-%m-%d}{error}{warn}"
                )
    finally:
        container.close()


@app.command("show")
def show(request_id: uuid.UUID) -> None:
    """One request: its steps' times, counts, remnant findings, how far its data is gone
    (live stores, every copy) and its receipt."""
    from tutela.erasure import copies  # noqa: PLC0415
    from tutela.erasure.models import ErasureRequest  # noqa: PLC0415

    container = _container()
    try:
        with container.stores.session() as session:
            row = session.get(ErasureRequest, request_id)
            if row is None:
                typer.echo("error: no such request", err=True)
                raise typer.Exit(2)
            typer.echo(
                json.dumps(
                    {
                        "id": str(row.id),
                        "scope": row.scope_kind,
                        "status": row.status,
                        "step": row.step,
                        "requested_by": row.requester_kind,
                        "steps": json.loads(row.step_times or "{}"),
                        "counts": json.loads(row.counts or "{}"),
                        "findings": json.loads(row.findings) if row.findings else None,
                        "last_error": row.last_error,
                        "unreadable": copies.of_request(container.vault.keys, row).to_json(),
                        "receipt": json.loads(row.receipt) if row.receipt else None,
                    },
                    indent=2,
                    default=str,
                )
            )
    finally:
        container.close()


@app.command("retry")
def retry(
    request_id: Annotated[uuid.UUID, typer.Argument(help="The failed (or blocked) request.")],
    wait: Annotated[bool, typer.Option(help="Run the job to completion here.")] = True,
) -> None:
    """Run a failed (or blocked) request again once its fault is fixed: from the step
    that failed (from keys after an unclean remnant check), its deadline unchanged."""
    from tutela.core.errors import TutelaError  # noqa: PLC0415
    from tutela.erasure.models import ErasureRequest  # noqa: PLC0415

    container = _container()
    try:
        try:
            row = container.erasure.retry(request_id, by="operator:cli")
        except TutelaError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"Erasure request {row.id} queued again from step {row.step}, "
            f"complete by {row.complete_by:%Y-%m-%d}."
        )
        if wait:
            _drain(container)
            with container.stores.session() as session:
                done = session.get(ErasureRequest, row.id)
                assert done is not None
                typer.echo(f"Now {done.status} (step {done.step}).")
    finally:
        container.close()


@app.command("run")
def run() -> None:
    """Run every due erasure job here until none is left."""
    container = _container()
    try:
        completed = _drain(container)
        container.erasure.check_deadlines()
        typer.echo(f"{completed} erasure requests completed.")
    finally:
        container.close()


@app.command("consumer-add")
def consumer_add(
    name: Annotated[str, typer.Argument(help="A short name for the consumer.")],
    url: Annotated[str, typer.Argument(help="Its webhook address (https).")],
) -> None:
    """Register a downstream consumer to be told of every erasure; prints its secret once."""
    from tutela.core.errors import TutelaError  # noqa: PLC0415
    from tutela.erasure.downstream import register_consumer  # noqa: PLC0415

    container = _container()
    try:
        with container.stores.session() as session:
            try:
                consumer, secret = register_consumer(
                    session, container.vault.keys, name=name, url=url, now=container.clock.now()
                )
            except TutelaError as exc:
                typer.echo(f"error: {exc.detail}", err=True)
                raise typer.Exit(2) from None
        typer.echo(f"Consumer {consumer.id} added.")
        typer.echo(f"Signing secret (shown once): {secret}")
    finally:
        container.close()


@app.command("dead-letters")
def dead_letters() -> None:
    """Notices a consumer never confirmed: their erasures stay blocked until retried."""
    from tutela.erasure.models import DownstreamConsumer, DownstreamDelivery  # noqa: PLC0415

    container = _container()
    try:
        with container.stores.session() as session:
            rows = session.execute(
                select(DownstreamDelivery, DownstreamConsumer.name)
                .join(DownstreamConsumer, DownstreamConsumer.id == DownstreamDelivery.consumer_id)
                .where(DownstreamDelivery.dead_at.is_not(None))
            ).all()
            for delivery, name in rows:
                typer.echo(
                    f"{delivery.request_id}  consumer={name}  attempts={delivery.attempts}  "
                    f"last_error={delivery.last_error}  "
                    f"dead_since={delivery.dead_at:%Y-%m-%d %H:%M}"
                )
            typer.echo(f"{len(rows)} dead letters.")
    finally:
        container.close()


@app.command("retry-dead")
def retry_dead(
    request_id: Annotated[uuid.UUID | None, typer.Argument(help="One request, or all.")] = None,
) -> None:
    """Try dead-lettered notices again (after fixing the consumer); unblocks their jobs."""
    from sqlalchemy import update  # noqa: PLC0415

    from tutela.erasure import downstream  # noqa: PLC0415
    from tutela.erasure.models import ErasureRequest, RequestStatus  # noqa: PLC0415

    container = _container()
    try:
        now = container.clock.now()
        with container.stores.session() as session:
            count = downstream.retry_dead(session, now=now, request_id=request_id)
            blocked = update(ErasureRequest).where(ErasureRequest.status == RequestStatus.BLOCKED)
            if request_id is not None:
                blocked = blocked.where(ErasureRequest.id == request_id)
            session.execute(blocked.values(status=RequestStatus.RUNNING, next_run_at=now))
            container.erasure.wakeup.announce(session)  # workers run them at once (wake.py)
            session.commit()
        typer.echo(f"{count} dead letters queued again.")
    finally:
        container.close()


@backup_app.command("restore-check")
def restore_check(
    dry_run: Annotated[bool, typer.Option(help="Report only; erase nothing.")] = False,
) -> None:
    """Run after restoring a backup of the main database: erase again what was erased
    after the backup was taken (S8), found through the tombstones in the key store."""
    from tutela.erasure.restore import restore_check as check  # noqa: PLC0415

    container = _container()
    try:
        report = check(container, dry_run=dry_run)
        typer.echo(
            f"Restored rows of erased subjects: {report.households} households, "
            f"{report.profiles} profiles, {report.items} items."
        )
        if report.notices:
            typer.echo(
                f"Restored notices to or about erased subjects: {report.notices}"
                f"{'' if dry_run else ', deleted unsent'}."
            )
        if dry_run:
            typer.echo("Dry run: nothing erased.")
            return
        completed = _drain(container)
        typer.echo(f"{len(report.requests)} erasure requests made, {completed} completed.")
    finally:
        container.close()
