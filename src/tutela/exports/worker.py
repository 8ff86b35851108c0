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

import csv
import hashlib
import io
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, func, or_, select, tuple_, update

from tutela.audit.service import AuditTag, record
from tutela.core.errors import KeyUnavailable, NotFound, TutelaError
from tutela.core.ids import uuid7
from tutela.erasure.models import RequesterKind
from tutela.erasure.scope import Member, Requester, Scope
from tutela.exports import rules
from tutela.exports.models import Export, ExportState
from tutela.exports.package import PackageWriter
from tutela.households import service as households
from tutela.households.models import Account, Profile, ProfileKind, ProfileState
from tutela.identity.owners import Owner
from tutela.notices.service import NoticeKind, enqueue
from tutela.vault import crypto
from tutela.vault import service as vault_service
from tutela.vault.models import ItemKind, ItemState, MediaItem

if TYPE_CHECKING:
    from tutela.container import Container

log = logging.getLogger("tutela.exports")
PAGE: Final = 200
MAX_ATTEMPTS: Final = 3
PROGRESS_SECONDS: Final = 1.0
EXPIRY: Final = Requester(RequesterKind.EXPORT_EXPIRY, "rule:export-expiry")
MEDIA_KINDS: Final = (ItemKind.VOICE, ItemKind.VIDEO, ItemKind.SNAPSHOT, ItemKind.THUMBNAIL)
README: Final = """A copy of the data Tutela holds about one profile
==================================================

manifest.json      every item: its id, kind, media type, when it was captured and
                   received, its size and the SHA-256 of its content as held (for
                   media, exactly the bytes of its file here); then every file of this
                   package with its size and SHA-256.
profile.json       the profile's own details: name, kind, birth date.
media/<kind>/      voice recordings, camera clips, snapshots and thumbnails, in the
                   format they were recorded in, named <captured time>_<item id>.
transcripts.json   the transcripts of voice recordings (with the recording's id);
transcripts.csv    the same as a table. A cell that a spreadsheet would read as a
                   formula starts with an apostrophe; the JSON keeps the exact text.
locations.json     location batches, with each point (latitude, longitude, time,
locations.csv      accuracy in metres); the CSV has one point a line.

Times are UTC (ISO 8601). The download link of this copy expires, and the copy is
then erased from Tutela's stores; ask for a new one at any time. Items erased while
the copy was being made are left out (counted as "left_out" in the manifest).
"""


class _Abandoned(Exception):
    """The export is no longer this worker's: its lease was taken, or it was erased."""


@dataclass(frozen=True)
class Claimed:
    household_id: uuid.UUID
    export_id: uuid.UUID
    profile_id: uuid.UUID
    account_id: uuid.UUID
    package_id: uuid.UUID
    blob_key: str
    started_at: datetime
    total: int
    attempts: int


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
        total = session.scalar(_items(row.household_id, row.profile_id, now, count=True))
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


def _items(
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    started_at: datetime,
    *,
    kinds: tuple[str, ...] = (),
    count: bool = False,
) -> Any:
    conds = [
        MediaItem.household_id == household_id,
        MediaItem.profile_id == profile_id,
        MediaItem.state == ItemState.ACTIVE,
        MediaItem.received_at <= started_at,
    ]
    if kinds:
        conds.append(MediaItem.kind.in_(kinds))
    if count:
        return select(func.count()).select_from(MediaItem).where(*conds)
    return select(MediaItem).where(*conds)


def _pages(container: Container, job: Claimed, kinds: tuple[str, ...]) -> Iterator[MediaItem]:
    """Items of these kinds, oldest first, a page of rows per short transaction."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = _items(job.household_id, job.profile_id, job.started_at, kinds=kinds)
        if after is not None:
            query = query.where(tuple_(MediaItem.captured_at, MediaItem.id) > tuple_(*after))
        with container.stores.session() as session:
            rows = list(
                session.scalars(query.order_by(MediaItem.captured_at, MediaItem.id).limit(PAGE))
            )
            session.expunge_all()
        if not rows:
            return
        yield from rows
        after = (rows[-1].captured_at, rows[-1].id)


class _Progress:
    """Counts items done, and tells the row (renewing the lease) about once a second."""

    def __init__(self, container: Container, job: Claimed) -> None:
        self.container, self.job = container, job
        self.done = 0
        self.left_out = 0
        self._told = time.monotonic()

    def item(self, *, left_out: bool = False) -> None:
        self.done += 1
        self.left_out += left_out
        if time.monotonic() - self._told >= PROGRESS_SECONDS:
            self.tell()

    def tell(self) -> None:
        self._told = time.monotonic()
        now = self.container.clock.now()
        lease = timedelta(seconds=self.container.settings.export_lease_seconds)
        with self.container.stores.session() as session:
            moved = session.execute(
                update(Export)
                .where(
                    Export.household_id == self.job.household_id,
                    Export.id == self.job.export_id,
                    Export.package_id == self.job.package_id,
                    Export.state == ExportState.PACKAGING,
                )
                .values(items_done=self.done, lease_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        if getattr(moved, "rowcount", 0) != 1:
            raise _Abandoned


def _when(at: datetime) -> str:
    return at.isoformat()


def _manifest_item(item: MediaItem, path: str | None, size: int, sha256: str) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "kind": item.kind,
        "media_type": item.media_type,
        "captured_at": _when(item.captured_at),
        "received_at": _when(item.received_at),
        "source_item_id": str(item.source_item_id) if item.source_item_id else None,
        "size": size,
        "sha256": sha256,
        "path": path,
    }


class _Packager:
    """Produces the zip's bytes for one claimed export, recording its manifest."""

    def __init__(self, container: Container, job: Claimed) -> None:
        self.container, self.job = container, job
        self.writer = PackageWriter()
        self.progress = _Progress(container, job)
        self.items: list[dict[str, Any]] = []
        self.reader = vault_service.Reader(job.household_id, frozenset({job.profile_id}))

    def pieces(self) -> Iterator[bytes]:
        w = self.writer
        yield from w.file("README.txt", [README.encode()], compress=True)
        yield from w.file("profile.json", [self._profile()], compress=True)
        for item in _pages(self.container, self.job, MEDIA_KINDS):
            yield from self._media(item)
        yield from w.file("transcripts.json", self._transcripts_json(), compress=True)
        yield from w.file("transcripts.csv", self._transcripts_csv(), compress=True)
        yield from w.file("locations.json", self._locations_json(), compress=True)
        yield from w.file("locations.csv", self._locations_csv(), compress=True)
        self.progress.tell()
        yield from w.file("manifest.json", [self._manifest()], compress=True)
        yield from w.close()

    def _profile(self) -> bytes:
        with self.container.stores.session() as session:
            profile = session.get(Profile, (self.job.household_id, self.job.profile_id))
            if profile is None or profile.state != ProfileState.ACTIVE:
                raise _Abandoned
            view = households.profile_view(self.container.vault.keys, profile)
        birth = view.birth_date.isoformat() if view.birth_date else None
        return json.dumps(
            {"id": str(view.id), "kind": view.kind, "name": view.name, "birth_date": birth},
            indent=2,
        ).encode()

    def _open(self, item: MediaItem) -> vault_service.Content | None:
        """The item's content through the vault; None if it was erased meanwhile."""
        try:
            with self.container.stores.session() as session:
                return vault_service.open_content(
                    session, self.container.vault, reader=self.reader, item_id=item.id
                )
        except (NotFound, KeyUnavailable):
            return None

    def _media(self, item: MediaItem) -> Iterator[bytes]:
        content = self._open(item)
        if content is None:
            self.progress.item(left_out=True)
            return
        path = rules.media_path(item.kind, item.captured_at, item.id, item.media_type)
        yield from self.writer.file(path, content.chunks, when=item.captured_at)
        written = self.writer.files[-1]
        self.items.append(_manifest_item(item, path, written.size, written.sha256))
        self.progress.item()

    def _transcript(self, item: MediaItem) -> dict[str, str | None] | None:
        try:
            return vault_service.read_transcript(self.container.vault, item=item)
        except (NotFound, KeyUnavailable):
            return None

    def _transcripts(self, *, first: bool) -> Iterator[tuple[MediaItem, dict[str, Any]]]:
        for item in _pages(self.container, self.job, (ItemKind.TRANSCRIPT,)):
            data = self._transcript(item)
            if data is None:
                if first:
                    self.progress.item(left_out=True)
                continue
            if first:
                text = (data.get("text") or "").encode()
                digest = hashlib.sha256(text).hexdigest()
                self.items.append(_manifest_item(item, "transcripts.json", len(text), digest))
                self.progress.item()
            yield (
                item,
                {
                    "item_id": str(item.id),
                    "voice_item_id": str(item.source_item_id) if item.source_item_id else None,
                    "captured_at": _when(item.captured_at),
                    "language": data.get("language"),
                    "text": data.get("text"),
                },
            )

    def _transcripts_json(self) -> Iterator[bytes]:
        yield from _json_array(entry for _, entry in self._transcripts(first=True))

    def _transcripts_csv(self) -> Iterator[bytes]:
        columns = ["item_id", "voice_item_id", "captured_at", "language", "text"]
        rows = (
            [rules.csv_cell(str(e[c] or "")) for c in columns]
            for _, e in self._transcripts(first=False)
        )
        yield from _csv(columns, rows)

    def _location(self, item: MediaItem) -> tuple[bytes, list[dict[str, Any]]] | None:
        """One location batch (at most `max_location_points` points, a few hundred KiB)."""
        content = self._open(item)
        if content is None:
            return None
        raw = b"".join(content.chunks)
        return raw, json.loads(raw)

    def _locations(self, *, first: bool) -> Iterator[tuple[MediaItem, list[dict[str, Any]]]]:
        for item in _pages(self.container, self.job, (ItemKind.LOCATION,)):
            found = self._location(item)
            if found is None:
                if first:
                    self.progress.item(left_out=True)
                continue
            raw, points = found
            if first:
                digest = hashlib.sha256(raw).hexdigest()
                self.items.append(_manifest_item(item, "locations.json", len(raw), digest))
                self.progress.item()
            yield item, points

    def _locations_json(self) -> Iterator[bytes]:
        yield from _json_array(
            {"item_id": str(item.id), "captured_at": _when(item.captured_at), "points": points}
            for item, points in self._locations(first=True)
        )

    def _locations_csv(self) -> Iterator[bytes]:
        columns = ["item_id", "at", "latitude", "longitude", "accuracy_m"]
        rows = (
            [
                str(item.id),
                str(p.get("at")),
                str(p.get("lat")),
                str(p.get("lon")),
                "" if p.get("accuracy_m") is None else str(p.get("accuracy_m")),
            ]
            for item, points in self._locations(first=False)
            for p in points
        )
        yield from _csv(columns, rows)

    def _manifest(self) -> bytes:
        return json.dumps(
            {
                "format": rules.FORMAT,
                "export_id": str(self.job.export_id),
                "profile_id": str(self.job.profile_id),
                "items_as_of": _when(self.job.started_at),
                "made_at": _when(self.container.clock.now()),
                "items": self.items,
                "left_out": self.progress.left_out,
                "files": [
                    {"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.writer.files
                ],
            },
            indent=1,
        ).encode()


def _json_array(entries: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    first = True
    for entry in entries:
        yield (b"\n" if first else b",\n") + json.dumps(entry).encode()
        first = False
    yield b"\n]\n"


def _csv(columns: list[str], rows: Iterator[list[str]]) -> Iterator[bytes]:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(columns)
    for row in rows:
        out.writerow(row)
        if buf.tell() >= 64 * 1024:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


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
        packager = _Packager(container, job)
        sealed = vault.blobs.write(job.blob_key, sealer.seal(packager.pieces()))
        _ready(container, job, size=sealer.plain_size, sealed=sealed, done=packager.progress.done)
    except _Abandoned:
        _discard(container, job.household_id, job.package_id, job.blob_key)
        return False
    except Exception as exc:
        _discard(container, job.household_id, job.package_id, job.blob_key)
        _failed(container, job, exc)
        return False
    container.deliver_notices()
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
            raise _Abandoned
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
            raise _Abandoned
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
