"""An auditor's probe: recover erased keys from what the key store's copies still hold.

Everything here reads what an attacker with the database files and the key source would
read: PostgreSQL's raw heap tuples (live and dead, `pageinspect`), the raw bytes of its
pages (free space included), a logical dump taken before the erasure, a backup of the
SQLite key store. Each candidate copy is tried against every key the key source still
holds (master keys and epoch keys) under Tutela's own crypto.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from tutela.core.errors import IntegrityFailure, KeyUnavailable
from tutela.vault import crypto
from tutela.vault.keysource import KeySource
from tutela.vault.keystore import item_context, items_context, profile_context


@dataclass(frozen=True)
class ProfileRow:
    household_id: uuid.UUID
    profile_id: uuid.UUID
    wrapped: bytes
    items_wrapped: bytes | None = None


@dataclass(frozen=True)
class ItemRow:
    household_id: uuid.UUID
    item_id: uuid.UUID
    wrapped: bytes


def live_keks(source: KeySource) -> list[bytes]:
    """Every key the source still holds: what an attacker with it could try."""
    found = []
    for key_id in source.key_ids():
        found.append(source.key(key_id))
    for epoch_id in source.epoch_ids():
        try:
            found.append(source.epoch_key(epoch_id))
        except KeyUnavailable:
            continue
    return found


def recover_profile_keys(
    rows: Iterable[ProfileRow], keks: list[bytes], profile_id: uuid.UUID
) -> list[tuple[bytes, bytes | None]]:
    """(profile key, item-wrapping key) of every copy of `profile_id`'s row that unwraps."""
    recovered = []
    for row in rows:
        if row.profile_id != profile_id:
            continue
        for kek in keks:
            try:
                key = crypto.unwrap_key(
                    kek, row.wrapped, context=profile_context(row.household_id, row.profile_id)
                )
            except IntegrityFailure:
                continue
            items = None
            if row.items_wrapped is not None:
                items = crypto.unwrap_key(
                    kek,
                    row.items_wrapped,
                    context=items_context(row.household_id, row.profile_id),
                )
            recovered.append((key, items))
    return recovered


def recover_item_key(
    rows: Iterable[ItemRow], wrapping_keys: Iterable[bytes], item_id: uuid.UUID
) -> bytes | None:
    candidates = list(wrapping_keys)
    for row in rows:
        if row.item_id != item_id:
            continue
        for kek in candidates:
            try:
                return crypto.unwrap_key(
                    kek, row.wrapped, context=item_context(row.household_id, row.item_id)
                )
            except IntegrityFailure:
                continue
    return None


# --- PostgreSQL: heap tuples and raw pages ------------------------------------------------


def _varlena(data: bytes, offset: int) -> tuple[bytes, int]:
    """A short (1-byte header) or 4-byte-header varlena at `offset`, and the offset after it."""
    first = data[offset]
    if first & 0x01:
        size = first >> 1
        return data[offset + 1 : offset + size], offset + size
    while offset % 4:
        offset += 1
    size = int.from_bytes(data[offset : offset + 4], "little") >> 2
    return data[offset + 4 : offset + size], offset + size


def pg_tuples(engine: Engine, table: str) -> list[bytes]:
    """The data of every tuple still in the table's pages, live or dead (pageinspect)."""
    with engine.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        conn.commit()
        blocks = conn.execute(
            text(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int")
        ).scalar_one()
        rows = conn.execute(
            text(
                f"SELECT t_data FROM generate_series(0, {blocks - 1}) n, "  # noqa: S608
                f"LATERAL heap_page_items(get_raw_page('{table}', n::int)) "
                "WHERE t_data IS NOT NULL"
            )
        ).all()
    return [bytes(r[0]) for r in rows]


def pg_raw_pages(engine: Engine, table: str) -> bytes:
    """Every byte of the table's pages, free space included."""
    with engine.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        conn.commit()
        blocks = conn.execute(
            text(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int")
        ).scalar_one()
        pages = conn.execute(
            text(f"SELECT get_raw_page('{table}', n::int) FROM generate_series(0, {blocks - 1}) n")  # noqa: S608
        ).all()
    return b"".join(bytes(p[0]) for p in pages)


def pg_profile_rows(engine: Engine) -> list[ProfileRow]:
    """`profile_keys` tuples parsed from their raw data: two uuids, then `wrapped`."""
    found = []
    for data in pg_tuples(engine, "profile_keys"):
        wrapped, _ = _varlena(data, 32)
        found.append(ProfileRow(uuid.UUID(bytes=data[:16]), uuid.UUID(bytes=data[16:32]), wrapped))
    return found


def pg_item_rows(engine: Engine) -> list[ItemRow]:
    """`item_keys` tuples: household, item and profile uuids, then `wrapped`."""
    found = []
    for data in pg_tuples(engine, "item_keys"):
        wrapped, _ = _varlena(data, 48)
        found.append(ItemRow(uuid.UUID(bytes=data[:16]), uuid.UUID(bytes=data[16:32]), wrapped))
    return found


# --- dumps: what a backup of the key store holds ------------------------------------------


def dump_profile_rows(engine: Engine) -> list[ProfileRow]:
    """A logical dump of `profile_keys`, as `pg_dump` or a SQLite backup would hold it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT household_id, profile_id, wrapped, items_wrapped FROM profile_keys")
        ).all()
    return [ProfileRow(_uuid(r[0]), _uuid(r[1]), bytes(r[2]), _bytes(r[3])) for r in rows]


def dump_item_rows(engine: Engine) -> list[ItemRow]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT household_id, item_id, wrapped FROM item_keys")).all()
    return [ItemRow(_uuid(r[0]), _uuid(r[1]), bytes(r[2])) for r in rows]


def sqlite_backup_rows(path: Path) -> tuple[list[ProfileRow], list[ItemRow]]:
    """The key rows of a SQLite key-store backup file (a copy, never the live file)."""
    conn = sqlite3.connect(path)
    try:
        profiles = [
            ProfileRow(_uuid(r[0]), _uuid(r[1]), bytes(r[2]), _bytes(r[3]))
            for r in conn.execute(
                "SELECT household_id, profile_id, wrapped, items_wrapped FROM profile_keys"
            )
        ]
        items = [
            ItemRow(_uuid(r[0]), _uuid(r[1]), bytes(r[2]))
            for r in conn.execute("SELECT household_id, item_id, wrapped FROM item_keys")
        ]
    finally:
        conn.close()
    return profiles, items


def _uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes | memoryview):
        return uuid.UUID(bytes=bytes(value))
    return uuid.UUID(str(value))


def _bytes(value: object) -> bytes | None:
    return None if value is None else bytes(value)  # type: ignore[call-overload]
