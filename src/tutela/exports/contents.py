"""What goes into an export's package: the profile's items read through the vault (C6).

Every item of the profile that had arrived when packaging started, a page of rows per
short transaction, each read through the vault (`open_content`, `read_transcript`), so
decryption and integrity checks are the vault's; media pass through a chunk at a time.
An item erased meanwhile is left out (and counted); a failed integrity check fails the
whole package. The manifest keeps one small entry per item in memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import func, select, tuple_, update

from tutela.core.errors import KeyUnavailable, NotFound
from tutela.exports import rules
from tutela.exports.models import Export, ExportState
from tutela.exports.package import PackageWriter
from tutela.households import service as households
from tutela.households.models import Profile, ProfileState
from tutela.vault import service as vault_service
from tutela.vault.models import ItemKind, ItemState, MediaItem

if TYPE_CHECKING:
    from tutela.container import Container

PAGE: Final = 200
PROGRESS_SECONDS: Final = 1.0
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


class Abandoned(Exception):
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


def items_of(
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


def pages(container: Container, job: Claimed, kinds: tuple[str, ...]) -> Iterator[MediaItem]:
    """Items of these kinds, oldest first, a page of rows per short transaction."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = items_of(job.household_id, job.profile_id, job.started_at, kinds=kinds)
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


class Progress:
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
            raise Abandoned


def _when(at: datetime) -> str:
    return at.isoformat()


Entry = tuple[uuid.UUID, str, str, datetime, datetime, uuid.UUID | None, int, bytes, str | None]
"""One item of the manifest, kept small until the manifest is written: id, kind, media
type, captured and received times, source item, size, SHA-256 (raw), path in the zip."""


def _manifest_item(item: MediaItem, path: str | None, size: int, sha256: str) -> Entry:
    return (
        item.id,
        item.kind,
        item.media_type,
        item.captured_at,
        item.received_at,
        item.source_item_id,
        size,
        bytes.fromhex(sha256),
        path,
    )


def _entry_json(entry: Entry) -> dict[str, Any]:
    item_id, kind, media_type, captured, received, source, size, digest, path = entry
    return {
        "id": str(item_id),
        "kind": kind,
        "media_type": media_type,
        "captured_at": _when(captured),
        "received_at": _when(received),
        "source_item_id": str(source) if source else None,
        "size": size,
        "sha256": digest.hex() if path is not None else None,
        "path": path,
        **(
            {"not_kept": "used in place of typing: the audio was never stored"}
            if path is None
            else {}
        ),
    }


class Packager:
    """Produces the zip's bytes for one claimed export, recording its manifest."""

    def __init__(self, container: Container, job: Claimed) -> None:
        self.container, self.job = container, job
        self.writer = PackageWriter()
        self.progress = Progress(container, job)
        self.items: list[Entry] = []
        self.reader = vault_service.Reader(job.household_id, frozenset({job.profile_id}))

    def pieces(self) -> Iterator[bytes]:
        w = self.writer
        yield from w.file("README.txt", [README.encode()], compress=True)
        yield from w.file("profile.json", [self._profile()], compress=True)
        for item in pages(self.container, self.job, MEDIA_KINDS):
            yield from self._media(item)
        yield from w.file("transcripts.json", self._transcripts_json(), compress=True)
        yield from w.file("transcripts.csv", self._transcripts_csv(), compress=True)
        yield from w.file("locations.json", self._locations_json(), compress=True)
        yield from w.file("locations.csv", self._locations_csv(), compress=True)
        self.progress.tell()
        yield from w.file("manifest.json", self._manifest(), compress=True)
        yield from w.close()

    def _profile(self) -> bytes:
        with self.container.stores.session() as session:
            profile = session.get(Profile, (self.job.household_id, self.job.profile_id))
            if profile is None or profile.state != ProfileState.ACTIVE:
                raise Abandoned
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
        if item.ephemeral:
            # C11: voice used in place of typing was never kept; the manifest lists the
            # item (its transcript may still be held) with no file and no digest.
            self.items.append(_manifest_item(item, None, 0, ""))
            self.progress.item()
            return
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
        for item in pages(self.container, self.job, (ItemKind.TRANSCRIPT,)):
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
        for item in pages(self.container, self.job, (ItemKind.LOCATION,)):
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

    def _manifest(self) -> Iterator[bytes]:
        """The manifest, written an entry at a time (never one string of every item)."""
        head = {
            "format": rules.FORMAT,
            "export_id": str(self.job.export_id),
            "profile_id": str(self.job.profile_id),
            "items_as_of": _when(self.job.started_at),
            "made_at": _when(self.container.clock.now()),
            "left_out": self.progress.left_out,
        }
        yield json.dumps(head)[:-1].encode() + b',\n"items": '
        yield from _json_array(_entry_json(e) for e in self.items)
        yield b',\n"files": '
        files = ({"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.writer.files)
        yield from _json_array(files)
        yield b"}\n"


def _json_array(entries: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    first = True
    for entry in entries:
        yield (b"\n" if first else b",\n") + json.dumps(entry).encode()
        first = False
    yield b"\n]"


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
