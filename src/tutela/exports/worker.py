"""The worker's side of exports: packaging queued exports and erasing expired ones (C6).

Packaging reads every item of the profile that had arrived when it started, through the
vault (`open_content`, `read_transcript`: the vault's decryption and integrity checks),
a page of rows and one chunk of media at a time, into a zip that is sealed as it is made
(`exports.package`, `vault.crypto.StreamSealer`) under a key of its own: an item key
under the profile, named by the package's id, so the profile's erasure destroys it. A
worker holds an export under a lease it renews with each progress report; a worker that
dies leaves a lease that runs out, and the next one starts the package again.

Expiry goes through the one deletion path: a batch erasure names the packages, destroys
their keys before it answers, and its worker deletes the blobs, clears the rows and
signs a receipt once the remnant check is clean (A8, S6).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, func, or_, select, update

from tutela.audit.service import AuditTag, record
from tutela.core.errors import TutelaError
from tutela.core.ids import uuid7
from tutela.erasure.models import RequesterKind
from tutela.erasure.scope import Member, Requester, Scope
from tutela.exports import rules
from tutela.exports.contents import Abandoned, Claimed, Packager, items_of
from tutela.exports.models import Export, ExportState
from tutela.households.models import Account, Profile, ProfileKind, ProfileState
from tutela.identity.owners import Owner
from tutela.notices.service import NoticeKind, enqueue
from tutela.vault import crypto

if TYPE_CHECKING:
    from tutela.container import Container

log = logging.getLogger("tutela.exports")
MAX_ATTEMPTS: Final = 3
EXPIRY: Final = Requester(RequesterKind.EXPORT_EXPIRY, "rule:export-expiry")


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


# --- packaging -------------------------------------------------------------------------


def package_pending(container: Container, *, limit: int | None = None) -> int:
    """Package queued exports (and ones whose worker died), one after another; how many
    became ready."""
    ready = 0
    for _ in range(limit or container.settings.export_pass_limit):
        claimed = claim(container)
        if claimed is None:
            break
        if package(container, claimed):
            ready += 1
    if ready:
        container.deliver_notices()  # the ready notices, once for the pass
    return ready


def _due(now: datetime) -> Any:
    return or_(
        Export.state == ExportState.QUEUED,
        and_(Export.state == ExportState.PACKAGING, Export.lease_until < now),
    )


def claim(container: Container, *, owner: str | None = None) -> Claimed | None:
    """Take the oldest due export under a lease; a crashed attempt's package is discarded."""
    now = container.clock.now()
    lease = timedelta(seconds=container.settings.export_lease_seconds)
    with container.stores.session() as session:
        row = session.execute(
            select(
                Export.household_id,
                Export.id,
                Export.profile_id,
                Export.requested_by,
                Export.package_id,
                Export.blob_key,
                Export.attempts,
            )
            .where(_due(now))
            .order_by(Export.requested_at)
            .limit(1)
        ).first()
        if row is None:
            return None
        if row.attempts >= MAX_ATTEMPTS:
            # Its workers kept dying (its lease ran out each time): fail it, not loop.
            session.execute(
                update(Export)
                .where(Export.household_id == row.household_id, Export.id == row.id, _due(now))
                .values(
                    state=ExportState.FAILED,
                    reason="packaging_failed",
                    package_id=None,
                    blob_key=None,
                    lease_until=None,
                    lease_owner=None,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if row.package_id is not None:
                _discard(container, row.household_id, row.package_id, row.blob_key)
            return claim(container, owner=owner)
        total = session.scalar(items_of(row.household_id, row.profile_id, now, count=True))
        package_id = uuid7()
        blob = rules.blob_key(row.household_id, row.profile_id, package_id)
        claimed = session.execute(
            update(Export)
            .where(Export.household_id == row.household_id, Export.id == row.id, _due(now))
            .values(
                state=ExportState.PACKAGING,
                lease_until=now + lease,
                lease_owner=(owner or worker_name())[:64],
                attempts=Export.attempts + 1,
                started_at=now,
                package_id=package_id,
                blob_key=blob,
                items_total=int(total or 0),
                items_done=0,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            session.rollback()
            return None
        session.commit()
    if row.package_id is not None:
        _discard(container, row.household_id, row.package_id, row.blob_key)
    return Claimed(
        household_id=row.household_id,
        export_id=row.id,
        profile_id=row.profile_id,
        account_id=row.requested_by,
        package_id=package_id,
        blob_key=blob,
        started_at=now,
        total=int(total or 0),
        attempts=row.attempts + 1,
    )


def package(container: Container, job: Claimed) -> bool:
    """Make, seal and store one claimed export's package; whether it became ready.

    Never leaves a key or a blob behind on failure: both are discarded, and the export
    goes back to the queue (a store failing) or fails (its data can no longer be read)."""
    vault = container.vault
    try:
        key = vault.keys.create_item_key(
            household_id=job.household_id,
            profile_id=job.profile_id,
            item_id=job.package_id,
            now=container.clock.now(),
        )
        enc_key, mac_key = crypto.item_subkeys(key)
        sealer = crypto.StreamSealer(
            enc_key,
            aad=rules.package_aad(job.household_id, job.package_id),
            chunk_size=vault.chunk_size,
            mac_key=mac_key,
        )
        packager = Packager(container, job)
        sealed = vault.blobs.write(job.blob_key, sealer.seal(packager.pieces()))
        _ready(container, job, size=sealer.plain_size, sealed=sealed, done=packager.progress.done)
    except Abandoned:
        _discard(container, job.household_id, job.package_id, job.blob_key)
        return False
    except Exception as exc:
        _discard(container, job.household_id, job.package_id, job.blob_key)
        _failed(container, job, exc)
        return False
    return True


def _ready(container: Container, job: Claimed, *, size: int, sealed: int, done: int) -> None:
    """The package is whole: the export is ready, its link's time starts, and the account
    that asked is told (its mailbox), all in one transaction."""
    now = container.clock.now()
    expires = rules.expires_at(now, link_days=container.settings.export_link_days)
    with container.stores.session() as session:
        profile = session.get(Profile, (job.household_id, job.profile_id))
        account = session.get(Account, (job.household_id, job.account_id))
        if profile is None or profile.state != ProfileState.ACTIVE or account is None:
            raise Abandoned
        made = session.execute(
            update(Export)
            .where(
                Export.household_id == job.household_id,
                Export.id == job.export_id,
                Export.package_id == job.package_id,
                Export.state == ExportState.PACKAGING,
            )
            .values(
                state=ExportState.READY,
                ready_at=now,
                expires_at=expires,
                size=size,
                sealed_size=sealed,
                items_done=done,
                lease_until=None,
                lease_owner=None,
                reason=None,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(made, "rowcount", 0) != 1:
            session.rollback()
            raise Abandoned
        enqueue(
            session,
            container.vault.keys,
            kind=NoticeKind.EXPORT_READY,
            owner=Owner.account(job.household_id, job.account_id, account.profile_id),
            params={
                "at": now.isoformat(),
                "link": f"{container.settings.origin}/api/v1/exports/{job.export_id}/download",
                "until": expires.isoformat(),
            },
            now=now,
            # A guardian's copy of a child's data: the notice goes with the child (A5).
            about_profile_id=job.profile_id if profile.kind == ProfileKind.CHILD else None,
        )
        record(
            session,
            tag=AuditTag.EXPORT_READY,
            actor="system",
            now=now,
            household_id=job.household_id,
            subject=f"export:{job.export_id}",
        )
        session.commit()


def _failed(container: Container, job: Claimed, exc: Exception) -> None:
    """Back to the queue after a passing fault, failed for good when the data cannot be
    read or after `MAX_ATTEMPTS`; logged by type, never by content."""
    code = exc.code if isinstance(exc, TutelaError) else "packaging_failed"
    final = isinstance(exc, TutelaError) or job.attempts >= MAX_ATTEMPTS
    log.warning("export packaging failed: %s", type(exc).__name__)
    try:
        with container.stores.session() as session:
            session.execute(
                update(Export)
                .where(
                    Export.household_id == job.household_id,
                    Export.id == job.export_id,
                    Export.package_id == job.package_id,
                )
                .values(
                    state=ExportState.FAILED if final else ExportState.QUEUED,
                    reason=code[:40] if final else None,
                    package_id=None,
                    blob_key=None,
                    lease_until=None,
                    lease_owner=None,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
    except Exception as again:  # the store is down: the lease runs out, another retries
        log.warning("recording a failed export failed: %s", type(again).__name__)


def _discard(
    container: Container, household_id: uuid.UUID, package_id: uuid.UUID, blob: str | None
) -> None:
    """The key first (that alone makes any bytes unreadable), then the blob."""
    try:
        container.vault.keys.destroy_item_keys(household_id=household_id, item_ids=[package_id])
    except Exception as exc:
        log.error("discarding an export key failed: %s", type(exc).__name__)
    if blob is not None:
        try:
            container.vault.blobs.delete(blob)
        except Exception as exc:
            log.error("discarding an export blob failed: %s", type(exc).__name__)


# --- expiry ----------------------------------------------------------------------------


def expire_due(container: Container, *, limit: int | None = None) -> int:
    """Erase the packages whose link has expired, through the erasure engine: a batch per
    `erasure_batch_size` packages, their keys destroyed before this returns (S6); the
    worker's erasure pass removes the blobs, clears the rows and signs the receipts."""
    now = container.clock.now()
    size = container.settings.erasure_batch_size
    erased = 0
    while limit is None or erased < limit:
        with container.stores.session() as session:
            rows = session.execute(
                select(Export.household_id, Export.id, Export.profile_id, Export.package_id)
                .where(
                    Export.state == ExportState.READY,
                    Export.expires_at <= now,
                    Export.erasure_request_id.is_(None),
                    Export.package_id.is_not(None),
                )
                .order_by(Export.expires_at)
                .limit(size if limit is None else min(size, limit - erased))
            ).all()
        if not rows:
            break
        members = [Member(r.household_id, r.profile_id, r.package_id) for r in rows]
        request = container.erasure.start(Scope.batch(members), EXPIRY)
        with container.stores.session() as session:
            for r in rows:
                session.execute(
                    update(Export)
                    .where(Export.household_id == r.household_id, Export.id == r.id)
                    .values(
                        state=ExportState.EXPIRED,
                        expired_at=func.coalesce(Export.expired_at, now),
                        erasure_request_id=request.id,
                    )
                    .execution_options(synchronize_session=False)
                )
                record(
                    session,
                    tag=AuditTag.EXPORT_EXPIRED,
                    actor=EXPIRY.ref,
                    now=now,
                    household_id=r.household_id,
                    subject=f"export:{r.id}",
                )
            session.commit()
        erased += len(rows)
    return erased
