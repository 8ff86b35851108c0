"""Use cases of the vault: device ingestion, and a customer's listing and reading of items.

An upload is sealed as it streams in (no plaintext touches a disk), under a key made for
that item alone. If anything fails before the item's row commits, the blob and the key
are removed again: nothing half-written stays behind. A voice recording used only in
place of typed words is read, checked and dropped, never stored (C11).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Table, func, insert, select, tuple_
from sqlalchemy.orm import Session

from tutela.core.errors import Conflict, Gone, InvalidInput, NotFound, PayloadTooLarge
from tutela.core.ids import uuid7
from tutela.db.idsets import any_of
from tutela.households.models import Device, Profile, ProfileState
from tutela.vault import crypto, gates, rules
from tutela.vault.blobs import BlobStore
from tutela.vault.keystore import KeyStore
from tutela.vault.models import ItemKind, ItemState, MediaItem


@dataclass
class Vault:
    """The key store and the blob store, the two ports every vault use case needs."""

    keys: KeyStore
    blobs: BlobStore
    chunk_size: int = crypto.DEFAULT_CHUNK


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_future_skew: timedelta
    max_location_points: int = 10_000


@dataclass(frozen=True)
class LocationPoint:
    latitude: float
    longitude: float
    captured_at: datetime
    accuracy_m: float | None = None


@dataclass(frozen=True)
class Reader:
    """Whose items a listing or read may show: one household, some of its profiles."""

    household_id: uuid.UUID
    profile_ids: frozenset[uuid.UUID]


@dataclass
class Page:
    items: list[MediaItem]
    next_cursor: str | None


@dataclass
class Content:
    item: MediaItem
    start: int
    end: int
    partial: bool
    chunks: Iterator[bytes] = field(repr=False)


def item_aad(household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
    return b"tutela:item:" + household_id.bytes + item_id.bytes


def blob_key(household_id: uuid.UUID, profile_id: uuid.UUID, item_id: uuid.UUID) -> str:
    """Blobs are laid out by household and profile, so a profile's prefix is all of it."""
    return f"{household_id}/{profile_id}/{item_id}"


log = logging.getLogger(__name__)
ACTIVITY_RESOLUTION = timedelta(hours=1)


def _profile_for_upload(
    session: Session,
    device: Device,
    profile_id: uuid.UUID,
    now: datetime,
    *,
    consent: gates.ConsentQuestion,
    purpose: str,
) -> Profile:
    """The profile an upload is for, once its consent allows `purpose` (C3, C6): asked
    before the body is read, and before any key, blob or row is made."""
    profile = session.get(Profile, (device.household_id, profile_id))
    if profile is None:
        raise NotFound("No such profile in this device's household.", code="profile_not_found")
    if profile.state != ProfileState.ACTIVE:
        raise Conflict("This profile is being erased; nothing more is taken.", code="under_erasure")
    # Before the activity mark, so the question's read flushes no write that the body's
    # arrival would then hold open; a refused upload marks no activity (A1).
    gates.check(session, consent, profile=profile, purpose=purpose, now=now)
    if now - profile.last_active_at >= ACTIVITY_RESOLUTION:
        # Activity keeps a child profile out of the inactive-child rule (A1).
        profile.last_active_at = now
    return profile


def _limited(pieces: Iterable[bytes], *, limit: int, media_type: str) -> Iterator[bytes]:
    """Pass `pieces` through, refusing past `limit` bytes and checking the sniffed type."""
    total = 0
    head = bytearray()
    sniffed = False
    for piece in pieces:
        total += len(piece)
        if total > limit:
            raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
        if not sniffed:
            head += piece
            if len(head) < rules.SNIFF_BYTES:
                continue
            rules.check_sniffed(bytes(head), media_type)
            sniffed = True
            yield bytes(head)
            continue
        yield piece
    if not sniffed:
        if not head:
            raise InvalidInput("The upload is empty.", code="empty_upload")
        rules.check_sniffed(bytes(head), media_type)
        yield bytes(head)


def _insert(session: Session, item: MediaItem) -> None:
    """One INSERT for a new item, without the ORM's unit of work (this runs per upload).

    The item object is returned to the caller as a plain, transient value.
    """
    table = MediaItem.__table__
    assert isinstance(table, Table)
    values = {c.key: getattr(item, c.key) for c in table.columns}
    # Unset attributes take their column's default, as the unit of work would give them.
    values = {k: v for k, v in values.items() if v is not None or table.c[k].default is None}
    session.execute(insert(table).values(values))


def _discard(vault: Vault, item: MediaItem) -> None:
    """Undo a failed upload: the key first (that alone makes any bytes unreadable), then
    the blob. Each step is tried even if the other fails; failures are logged by type."""
    try:
        vault.keys.destroy_item_keys(household_id=item.household_id, item_ids=[item.id])
    except Exception as exc:
        log.error("discarding an item key failed: %s", type(exc).__name__)
    if item.blob_key is not None:
        try:
            vault.blobs.delete(item.blob_key)
        except Exception as exc:
            log.error("discarding a blob failed: %s", type(exc).__name__)


def _store_sealed(
    session: Session,
    vault: Vault,
    *,
    item: MediaItem,
    pieces: Iterable[bytes],
    now: datetime,
) -> MediaItem:
    """Seal `pieces` into the item's blob, then commit its row; undo both on any failure."""
    if not isinstance(pieces, (bytes, list, tuple)):
        # A streamed body: end the checks' read transaction first, so no snapshot or
        # connection is held open on the main store while it arrives (the profile's
        # activity mark commits with it).
        session.commit()
    key = vault.keys.create_item_key(
        household_id=item.household_id, profile_id=item.profile_id, item_id=item.id, now=now
    )
    item.blob_key = blob_key(item.household_id, item.profile_id, item.id)
    enc_key, mac_key = crypto.item_subkeys(key)
    sealer = crypto.StreamSealer(
        enc_key,
        aad=item_aad(item.household_id, item.id),
        chunk_size=vault.chunk_size,
        mac_key=mac_key,
    )
    try:
        item.sealed_size = vault.blobs.write(item.blob_key, sealer.seal(pieces))
        item.size = sealer.plain_size
        item.content_mac = sealer.digest
        _insert(session, item)
        session.commit()
    except BaseException:
        session.rollback()
        _discard(vault, item)
        raise
    return item


Body = bytes | Iterable[bytes]


def ingest_media(
    session: Session,
    vault: Vault,
    *,
    consent: gates.ConsentQuestion,
    device: Device,
    profile_id: uuid.UUID,
    kind: str,
    declared_type: str,
    captured_at: datetime,
    body: Body | Callable[[], Body],
    limits: Limits,
    now: datetime,
    source_item_id: uuid.UUID | None = None,
    declared_length: int | None = None,
    ephemeral: bool = False,
) -> MediaItem:
    """Take a recording, clip or snapshot from a device (R8: sealed before it is written).

    An `ephemeral` voice recording (C11) is checked like any other and then not kept:
    see `_take_ephemeral`.

    `body` may be a function that reads it: it is called only once every check has
    passed, consent's included, so a refused upload reads none of it (C3, C6).
    """
    item_kind, media_type = rules.check_upload_kind(kind, declared_type, device.kind)
    rules.check_ephemeral(item_kind, ephemeral)
    rules.check_captured_at(captured_at, now=now, max_skew=limits.max_future_skew)
    if declared_length is not None and declared_length > limits.max_upload_bytes:
        raise PayloadTooLarge(f"Uploads are limited to {limits.max_upload_bytes} bytes.")
    profile = _profile_for_upload(
        session, device, profile_id, now, consent=consent, purpose=gates.PURPOSE_OF_KIND[item_kind]
    )
    if item_kind is ItemKind.THUMBNAIL:
        if source_item_id is None:
            raise InvalidInput("A thumbnail names the clip it shows.", code="source_required")
        with session.no_autoflush:  # the activity mark waits for the row, not the body
            _source_for_derived(session, device, profile, source_item_id, {ItemKind.VIDEO})
    elif source_item_id is not None:
        raise InvalidInput("Only derived artifacts name a source item.", code="source_not_allowed")
    if callable(body):
        body = body()
    item = MediaItem(
        household_id=device.household_id,
        id=uuid7(),
        profile_id=profile.id,
        subject_class=profile.kind,
        device_id=device.id,
        source_item_id=source_item_id,
        kind=item_kind,
        media_type=media_type,
        captured_at=captured_at,
        received_at=now,
        state=ItemState.ACTIVE,
    )
    if isinstance(body, bytes):
        body = list(_limited([body], limit=limits.max_upload_bytes, media_type=media_type))
    else:
        body = _limited(body, limit=limits.max_upload_bytes, media_type=media_type)
    if ephemeral:
        return _take_ephemeral(session, item=item, pieces=body)
    return _store_sealed(session, vault, item=item, pieces=body, now=now)


def _take_ephemeral(session: Session, *, item: MediaItem, pieces: Iterable[bytes]) -> MediaItem:
    """Read a voice recording used only in place of typed words to its end, through the
    same type and size checks, and keep none of it (C11).

    No item key is made and nothing reaches the blob store. The row keeps what a parent
    needs to see that a request was heard: when, by which device, the media type and the
    length of the audio in bytes. It keeps no content fingerprint (`content_mac` is
    empty): an HMAC of a child's voice would be an identifier kept for nothing.
    """
    if not isinstance(pieces, (bytes, list, tuple)):
        session.commit()  # as `_store_sealed`: no transaction stays open while it streams
    item.size = sum(len(piece) for piece in pieces)
    item.content_mac = b""
    item.ephemeral = True
    try:
        _insert(session, item)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return item


def _source_for_derived(
    session: Session,
    device: Device,
    profile: Profile,
    source_item_id: uuid.UUID,
    kinds: set[ItemKind],
) -> MediaItem:
    source = session.get(MediaItem, (device.household_id, source_item_id))
    if source is None or source.profile_id != profile.id or source.kind not in kinds:
        raise NotFound("No such source item for this profile.", code="source_not_found")
    if source.state != ItemState.ACTIVE:
        raise Conflict("The source item is being erased.", code="under_erasure")
    return source


def ingest_transcript(
    session: Session,
    vault: Vault,
    *,
    consent: gates.ConsentQuestion,
    device: Device,
    source_item_id: uuid.UUID,
    text: str,
    language: str | None,
    now: datetime,
) -> MediaItem:
    """A device's transcript of a voice recording: a derived item, sealed under its own key."""
    if device.kind not in rules.DEVICE_KINDS[ItemKind.TRANSCRIPT]:
        raise InvalidInput("This device cannot upload transcripts.", code="kind_not_for_device")
    source = session.get(MediaItem, (device.household_id, source_item_id))
    if source is None or source.kind != ItemKind.VOICE:
        raise NotFound("No such voice recording.", code="source_not_found")
    profile = _profile_for_upload(
        session,
        device,
        source.profile_id,
        now,
        consent=consent,
        purpose=gates.PURPOSE_OF_KIND[ItemKind.TRANSCRIPT],
    )
    _source_for_derived(session, device, profile, source_item_id, {ItemKind.VOICE})
    item = MediaItem(
        household_id=device.household_id,
        id=uuid7(),
        profile_id=profile.id,
        subject_class=profile.kind,
        device_id=device.id,
        source_item_id=source.id,
        kind=ItemKind.TRANSCRIPT,
        media_type="text/plain",
        captured_at=source.captured_at,
        received_at=now,
        size=len(text.encode()),
        state=ItemState.ACTIVE,
        # The transcript of ephemeral voice is itself ephemeral: kept briefly (C11).
        ephemeral=source.ephemeral,
    )
    try:
        key = vault.keys.create_item_key(
            household_id=item.household_id, profile_id=profile.id, item_id=item.id, now=now
        )
        enc_key, mac_key = crypto.item_subkeys(key)
        payload = json.dumps({"text": text, "language": language}).encode()
        item.content_mac = crypto.keyed_digest(mac_key, text.encode())
        item.sealed_fields = crypto.seal(enc_key, payload, aad=item_aad(item.household_id, item.id))
        _insert(session, item)
        session.commit()
    except BaseException:
        session.rollback()
        _discard(vault, item)
        raise
    return item


def ingest_locations(
    session: Session,
    vault: Vault,
    *,
    consent: gates.ConsentQuestion,
    device: Device,
    profile_id: uuid.UUID,
    points: list[LocationPoint],
    limits: Limits,
    now: datetime,
) -> MediaItem:
    """A batch of location points, stored whole as one sealed item, or refused whole."""
    if device.kind not in rules.DEVICE_KINDS[ItemKind.LOCATION]:
        raise InvalidInput("This device cannot upload locations.", code="kind_not_for_device")
    if not points:
        raise InvalidInput("A location batch needs at least one point.", code="empty_batch")
    if len(points) > limits.max_location_points:
        raise PayloadTooLarge(f"A batch holds at most {limits.max_location_points} points.")
    for point in points:
        rules.check_captured_at(point.captured_at, now=now, max_skew=limits.max_future_skew)
    profile = _profile_for_upload(
        session,
        device,
        profile_id,
        now,
        consent=consent,
        purpose=gates.PURPOSE_OF_KIND[ItemKind.LOCATION],
    )
    body = json.dumps(
        [
            {
                "lat": p.latitude,
                "lon": p.longitude,
                "at": p.captured_at.isoformat(),
                "accuracy_m": p.accuracy_m,
            }
            for p in points
        ]
    ).encode()
    item = MediaItem(
        household_id=device.household_id,
        id=uuid7(),
        profile_id=profile.id,
        subject_class=profile.kind,
        device_id=device.id,
        kind=ItemKind.LOCATION,
        media_type="application/json",
        captured_at=min(p.captured_at for p in points),
        received_at=now,
        state=ItemState.ACTIVE,
    )
    return _store_sealed(session, vault, item=item, pieces=[body], now=now)


def list_items(
    session: Session,
    *,
    reader: Reader,
    profile_id: uuid.UUID | None = None,
    kind: ItemKind | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
    primary_only: bool = False,
) -> Page:
    """The reader's items, newest first, in pages that stay stable as new items arrive.

    `primary_only` leaves out derived artifacts (transcripts, thumbnails).
    """
    profiles = reader.profile_ids
    if profile_id is not None:
        if profile_id not in profiles:
            raise NotFound("No such profile.", code="profile_not_found")
        profiles = frozenset({profile_id})
    query = select(MediaItem).where(
        MediaItem.household_id == reader.household_id,
        MediaItem.profile_id.in_(profiles),
        MediaItem.state == ItemState.ACTIVE,
    )
    if kind is not None:
        query = query.where(MediaItem.kind == kind)
    if primary_only:
        query = query.where(MediaItem.source_item_id.is_(None))
    if since is not None:
        query = query.where(MediaItem.captured_at >= since)
    if until is not None:
        query = query.where(MediaItem.captured_at < until)
    if cursor is not None:
        at, last_id = rules.decode_cursor(cursor)
        query = query.where(tuple_(MediaItem.captured_at, MediaItem.id) < tuple_(at, last_id))
    rows = list(
        session.scalars(
            query.order_by(MediaItem.captured_at.desc(), MediaItem.id.desc()).limit(limit + 1)
        )
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = rules.encode_cursor(rows[-1].captured_at, rows[-1].id)
    return Page(items=rows, next_cursor=next_cursor)


def get_item(session: Session, *, reader: Reader, item_id: uuid.UUID) -> MediaItem:
    """One of the reader's items; anybody else's answers NotFound, so ids leak nothing."""
    item = session.get(MediaItem, (reader.household_id, item_id))
    if item is None or item.profile_id not in reader.profile_ids or item.state != ItemState.ACTIVE:
        raise NotFound("No such item.", code="item_not_found")
    return item


def live_items_of(
    session: Session,
    *,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    item_ids: Collection[uuid.UUID],
) -> int:
    """How many of `item_ids` are live items of this profile of this household: a
    selection is acted on only when that is every one of them (C6)."""
    if not item_ids:
        return 0
    count = session.scalar(
        select(func.count())
        .select_from(MediaItem)
        .where(
            MediaItem.household_id == household_id,
            MediaItem.profile_id == profile_id,
            any_of(
                MediaItem.id,
                sorted(set(item_ids)),
                postgresql=session.get_bind().dialect.name == "postgresql",
            ),
            MediaItem.state == ItemState.ACTIVE,
        )
    )
    return int(count or 0)


def derived_items(session: Session, *, item: MediaItem) -> list[MediaItem]:
    return list(
        session.scalars(
            select(MediaItem)
            .where(
                MediaItem.household_id == item.household_id,
                MediaItem.source_item_id == item.id,
                MediaItem.state == ItemState.ACTIVE,
            )
            .order_by(MediaItem.id)
        )
    )


def transcripts_of(
    session: Session, vault: Vault, *, items: list[MediaItem]
) -> dict[uuid.UUID, str | None]:
    """The transcript text of each voice item that has one, by the voice item's id."""
    voice = [i for i in items if i.kind == ItemKind.VOICE]
    if not voice:
        return {}
    household_ids = {i.household_id for i in voice}
    derived = session.scalars(
        select(MediaItem).where(
            MediaItem.household_id.in_(household_ids),
            MediaItem.source_item_id.in_([i.id for i in voice]),
            MediaItem.kind == ItemKind.TRANSCRIPT,
            MediaItem.state == ItemState.ACTIVE,
        )
    )
    return {
        d.source_item_id: read_transcript(vault, item=d)["text"]
        for d in derived
        if d.source_item_id is not None
    }


def read_transcript(vault: Vault, *, item: MediaItem) -> dict[str, str | None]:
    if item.kind != ItemKind.TRANSCRIPT or item.sealed_fields is None:
        raise NotFound("No transcript.", code="item_not_found")
    key, _ = crypto.item_subkeys(
        vault.keys.item_key(household_id=item.household_id, item_id=item.id)
    )
    data: dict[str, str | None] = json.loads(
        crypto.open_sealed(key, item.sealed_fields, aad=item_aad(item.household_id, item.id))
    )
    return data


def open_content(
    session: Session,
    vault: Vault,
    *,
    reader: Reader,
    item_id: uuid.UUID,
    byte_range: str | None = None,
) -> Content:
    """Decrypt an item's content, whole or one HTTP range, a chunk at a time."""
    item = get_item(session, reader=reader, item_id=item_id)
    if item.ephemeral and item.kind == ItemKind.VOICE:
        raise Gone(
            "This voice request was used in place of typing and was not kept.",
            code="ephemeral_not_kept",
        )
    if item.blob_key is None:
        payload = json.dumps(read_transcript(vault, item=item)).encode()
        return Content(item=item, start=0, end=len(payload), partial=False, chunks=iter([payload]))
    parsed = rules.parse_range(byte_range, item.size) if item.size else None
    span = parsed or (0, item.size)
    key, _ = crypto.item_subkeys(
        vault.keys.item_key(household_id=item.household_id, item_id=item.id)
    )
    blob = item.blob_key
    header = vault.blobs.read_at(blob, 0, crypto.STREAM_HEADER.size)
    opener = crypto.StreamOpener(
        key, aad=item_aad(item.household_id, item.id), header=header, plain_size=item.size
    )
    chunks = opener.read(
        lambda offset, length: vault.blobs.read_at(blob, offset, length), span[0], span[1]
    )
    return Content(item=item, start=span[0], end=span[1], partial=parsed is not None, chunks=chunks)
