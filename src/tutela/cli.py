"""The `tutela` command line: serve, worker, database, keys and demo commands."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Annotated

import typer

from tutela.settings import Settings

app = typer.Typer(help="Tutela: privacy and security control plane.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations for the main store and the key store.")
keys_app = typer.Typer(help="The master key and the key hierarchy.")
staff_app = typer.Typer(help="Employees of the operator: MFA is mandatory for all of them.")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(staff_app, name="staff")
log = logging.getLogger("tutela.cli")
STOP_CHECK_SECONDS = 0.2
"""How soon `tutela worker` notices SIGTERM or SIGINT while it waits."""


def _settings() -> Settings:
    return Settings()


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Addresses to listen on, comma-separated; localhost means 127.0.0.1 and ::1 "
            "[default: TUTELA_HOST, localhost]."
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="API processes.")] = None,
) -> None:
    """Serve the API and the console, by default at http://localhost:8000 (127.0.0.1 and
    ::1), where passkeys work: browsers refuse an IP address as WebAuthn's RP id."""
    from tutela.logging import configure  # noqa: PLC0415
    from tutela.serving import serve as run  # noqa: PLC0415

    settings = _settings()
    configure(settings.log_level)
    run(settings, host=host, port=port, workers=workers)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Run one pass and exit.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between passes when nothing wakes the worker "
            "[default: TUTELA_WORKER_POLL_SECONDS, 5]."
        ),
    ] = None,
) -> None:
    """Run background work: erasure jobs, downstream retries, deadline warnings, retention
    sweeps, delayed account recoveries that are due, and queued notices. A new erasure
    request wakes it at once (NOTIFY on PostgreSQL). Run as many as you like on
    PostgreSQL: jobs are claimed."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.logging import configure  # noqa: PLC0415

    settings = _settings()
    configure(settings.log_level)
    container = build(settings)
    wakeup = container.erasure.wakeup
    poll = settings.worker_poll_seconds if interval is None else interval
    stopping = False

    def _stop(*_: object) -> None:
        # A flag only: setting the wake-up's event here could deadlock on its lock, should
        # the signal arrive while this thread holds it; the wait below is cut in slices.
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("worker started")
    while not stopping:
        report = container.erasure_pass()
        swept = container.retention_pass()
        container.key_epoch_pass()
        container.recovery_pass()
        container.export_pass()
        sent = container.deliver_notices()
        if sent or report.completed or swept:
            log.info(
                "worker pass: %d erasures completed, %d retention erasures requested, "
                "%d notices sent",
                report.completed,
                swept,
                sent,
            )
        if once:
            break
        if report.progressed:
            continue  # more may be due already
        deadline = time.monotonic() + poll
        while not stopping and (left := deadline - time.monotonic()) > 0:
            if wakeup.wait(min(left, STOP_CHECK_SECONDS)):
                break
    container.close()
    log.info("worker stopped")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate both stores to `revision` (default: the newest)."""
    from tutela.db import migrate  # noqa: PLC0415

    settings = _settings()
    migrate.upgrade(settings.main_url, settings.keys_url, revision)
    typer.echo("Both stores are at the newest revision.")
    if revision == "head":
        from tutela.db.engine import open_stores  # noqa: PLC0415
        from tutela.identity.breached import seed_default  # noqa: PLC0415

        stores = open_stores(settings.main_url, settings.keys_url, pool_size=1)
        try:
            added = seed_default(stores.main_sessions)
        finally:
            stores.dispose()
        if added:
            typer.echo(f"Breached-password store seeded with {added} common passwords.")


@db_app.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree (alembic check) on either store."""
    from tutela.db import migrate  # noqa: PLC0415

    settings = _settings()
    migrate.check(settings.main_url, settings.keys_url)
    typer.echo("Models and migrations agree on both stores.")


@keys_app.command("epochs")
def epochs() -> None:
    """List the key epochs: which wraps new keys, which were destroyed and when (S6)."""
    from tutela.container import build  # noqa: PLC0415

    container = build(_settings())
    try:
        keys = container.vault.keys
        now = container.clock.now()
        keys.current_epoch(now=now)
        for epoch in keys.epochs():
            by = keys.unreadable_by(epoch, now=now)
            destroyed = (
                f"destroyed {epoch.destroyed_at:%Y-%m-%d %H:%M} UTC"
                if epoch.destroyed_at
                else f"every copy unreadable by {by:%Y-%m-%d %H:%M} UTC"
            )
            typer.echo(
                f"{epoch.seq:>6}  {epoch.state:<9}  started {epoch.started_at:%Y-%m-%d %H:%M} "
                f"UTC  {destroyed}"
            )
    finally:
        container.close()


@keys_app.command("rotate-epoch")
def rotate_epoch(
    force: Annotated[bool, typer.Option(help="Rotate now even if the epoch is not due.")] = False,
) -> None:
    """Begin a new key epoch, re-wrap every profile key under it and destroy the old one.

    Workers do this every half window (`TUTELA_KEY_COPIES_WINDOW_HOURS`); after it, no copy
    of a key destroyed before it (a backup or replica of the key store, its WAL, a dead
    tuple) can be unwrapped. If interrupted, run it again: it finishes what it began.
    """
    from tutela.container import build  # noqa: PLC0415

    container = build(_settings())
    try:
        result = container.rotate_key_epoch(force=force)
    finally:
        container.close()
    if result is None:
        typer.echo("No rotation: the epoch is not due (use --force), or another is running.")
        return
    typer.echo(
        f"Key epoch {result.current.seq} is current; destroyed "
        f"{', '.join(str(e.seq) for e in result.destroyed) or 'none'}; "
        f"{result.rewrapped_profiles} profile keys re-wrapped, {result.rekeyed_profiles} "
        f"profiles re-keyed ({result.rewrapped_items} item keys)."
    )


@keys_app.command("rotate-master")
def rotate_master(
    batch_size: Annotated[int, typer.Option(min=1, help="Profile keys per transaction.")] = 500,
) -> None:
    """Re-wrap every service key (and seal every key epoch) under a new master key, then
    retire the old one.

    No blob, item key or epoch-wrapped profile key is touched. If interrupted, run it
    again: it finishes the rotation it began, and the old master key stays until nothing is
    wrapped under it.
    """
    from tutela.audit.service import AuditTag, record  # noqa: PLC0415
    from tutela.container import build  # noqa: PLC0415

    container = build(_settings())
    try:
        from tutela.vault.rotation import rotate_master as rotate  # noqa: PLC0415

        result = rotate(container.vault.keys, batch_size=batch_size)
        with container.stores.session() as session:
            record(
                session,
                tag=AuditTag.MASTER_KEY_ROTATED,
                actor="operator:cli",
                now=container.clock.now(),
                subject=f"master-key:{result.new_master_key_id}",
            )
            session.commit()
    finally:
        container.close()
    typer.echo(
        f"New master key {result.new_master_key_id}: {result.rewrapped} keys re-wrapped, "
        f"{len(result.retired)} old master key(s) retired."
    )


@app.command()
def demo(
    households: Annotated[int, typer.Option(min=1, help="How many households to create.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed, for a repeatable population.")] = 7,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when a demo already exists.")
    ] = False,
) -> None:
    """Create a synthetic population of homes, people, devices and recordings."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.demo import (  # noqa: PLC0415
        DEMO_PASSWORD,
        DEMO_SECOND_PARENT_TOTP_SECRET,
        DEMO_TOTP_SECRET,
        build_demo,
        demo_exists,
    )
    from tutela.demo_access import ensure_demo_accesses  # noqa: PLC0415
    from tutela.demo_staff import ensure_demo_staff  # noqa: PLC0415

    settings = _settings()
    container = build(settings)
    try:
        if if_empty and demo_exists(container):
            typer.echo("The demo homes are already there.")
        else:
            build_demo(container, households=households, seed=seed)
        ensure_demo_staff(container)
        ensure_demo_accesses(container)
    finally:
        container.close()
    console = settings.public_url.rstrip("/")
    typer.echo("Demo sign-ins (password for all: " + DEMO_PASSWORD + "):")
    typer.echo(f"  at {console}/login")
    typer.echo("  parent@demo.tutela.test   a parent of two children, with cameras; its second")
    typer.echo(f"                            factor is the authenticator key {DEMO_TOTP_SECRET}")
    typer.echo("  parent2@demo.tutela.test  the other parent of the same home, who sees its")
    typer.echo("                            cameras too; its second factor is the authenticator")
    typer.echo(f"                            key {DEMO_SECOND_PARENT_TOTP_SECRET}")
    typer.echo(f"  {console}/privacy/access shows the employees' looks at its recordings (R9)")
    typer.echo(f"  at {console}/staff/login (employees; a second factor is set up at the first")
    typer.echo("  sign-in, R4)")
    typer.echo("  support@demo.tutela.test  support: adds an authenticator app from its QR code")
    typer.echo("  privacy@demo.tutela.test  privacy officer: must add a passkey or security key")


@staff_app.command("add")
def staff_add(
    email: Annotated[str, typer.Argument(help="The employee's work email.")],
    role: Annotated[
        list[str],
        typer.Option(
            help="A role (repeat for several): support, reviewer, privacy_officer, "
            "auditor, security, admin."
        ),
    ],
) -> None:
    """Add an employee. Prints a one-time password; the first sign-in must enrol a second
    factor (WebAuthn for roles that reach customer media) within 72 hours (R4)."""
    from tutela.container import build  # noqa: PLC0415
    from tutela.core.errors import TutelaError  # noqa: PLC0415
    from tutela.identity.staff import add_staff, needs_webauthn  # noqa: PLC0415

    container = build(_settings())
    try:
        with container.stores.session() as session:
            added = add_staff(
                session,
                container.vault.keys,
                container.hasher,
                email=email,
                roles=role,
                now=container.clock.now(),
            )
    except TutelaError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    finally:
        container.close()
    factor = (
        "a security key or passkey (WebAuthn)"
        if needs_webauthn(set(role))
        else ("a second factor (authenticator app or security key)")
    )
    typer.echo(f"Employee {added.staff_id} added.")
    typer.echo(f"One-time password (shown once): {added.initial_password}")
    typer.echo(
        f"At the first sign-in they must enrol {factor} and choose a new password, "
        f"before {added.expires_at:%Y-%m-%d %H:%M} UTC."
    )


def _register_breach_commands() -> None:
    from tutela.consent.cli import app as consent_app  # noqa: PLC0415
    from tutela.erasure.cli import app as erasure_app  # noqa: PLC0415
    from tutela.erasure.cli import backup_app  # noqa: PLC0415
    from tutela.erasure.receipt_cli import app as receipt_app  # noqa: PLC0415
    from tutela.exports.cli import app as exports_app  # noqa: PLC0415
    from tutela.identity.breach_cli import app as breach_app  # noqa: PLC0415
    from tutela.retention.cli import app as retention_app  # noqa: PLC0415
    from tutela.transparency.cli import app as staff_access_app  # noqa: PLC0415

    app.add_typer(staff_access_app, name="staff-access")
    app.add_typer(breach_app, name="breach")
    app.add_typer(erasure_app, name="erasure")
    app.add_typer(backup_app, name="backup")
    app.add_typer(receipt_app, name="receipt")
    app.add_typer(retention_app, name="retention")
    app.add_typer(consent_app, name="consent")
    app.add_typer(exports_app, name="exports")


_register_breach_commands()


def main() -> None:
    # Files Tutela makes (stores, blobs, keys, logs) are readable by their owner only.
    os.umask(0o077)
    app()
