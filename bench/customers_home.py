"""The customers of `bench/customers.py`: their stores, their homes and recordings, the raw floor.

Homes and recordings are written with the library's own building blocks (A5, A8): each
customer is a household made by `create_home` (one owner, one voice device); the owner's
recordings are written as ingestion writes them (`KeyStore.create_item_key`, the HKDF
subkeys, `StreamSealer`, the blob store's `write` under `household/profile/item`), and
the item rows are INSERTed in batches with the columns `vault.service` gives them.
Several threads do the per-item part. Blob files on local disk are written without a
per-file fsync and synced once (`os.sync`) before anything is measured; PostgreSQL is
vacuumed, analyzed and checkpointed.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/"
PASSWORD = "quartz lantern orchard 4471 bench"  # noqa: S105 (throw-away bench accounts)
KiB = 1024
MiB = 1024 * KiB
THREADS = 4
HOMES_PER_COMMIT = 25
ROWS_PER_INSERT = 1000


@dataclass(frozen=True)
class Customer:
    """One household: its owner's sign-in, profile and recordings."""

    number: int
    email: str
    household_id: uuid.UUID
    profile_id: uuid.UUID
    device_id: uuid.UUID
    items: tuple[uuid.UUID, ...] = ()


# --- stores ---------------------------------------------------------------------------------


@contextmanager
def databases(store: str, tag: str) -> Iterator[dict[str, str]]:
    """Fresh main and key-store databases on PostgreSQL, dropped afterwards; none for SQLite."""
    if store != "postgresql":
        yield {}
        return
    names = [f"tutela_bench_{tag}_{os.getpid()}", f"tutela_bench_{tag}_{os.getpid()}_keys"]
    with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"database_url": PG_SERVER + names[0], "keystore_url": PG_SERVER + names[1]}
    finally:
        with psycopg.connect(PG_SERVER + "postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection with the pragmas of tutela.db.engine, so the floor pays the same."""
    conn = sqlite3.connect(path, timeout=10.0)
    for pragma in (
        "foreign_keys=ON",
        "journal_mode=WAL",
        "secure_delete=ON",
        "synchronous=NORMAL",
        "busy_timeout=10000",
    ):
        conn.execute("PRAGMA " + pragma)
    return conn


def settle(store: str, settings: Any) -> None:
    """After the bulk load: blobs on disk, fresh planner statistics, a quiet WAL."""
    os.sync()  # what ingestion's per-blob fsync would have done
    if store == "postgresql":
        for url in (settings.main_url, settings.keys_url):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        with psycopg.connect(settings.main_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    time.sleep(1.0)


# --- population -----------------------------------------------------------------------------


def recording_sizes(count: int, seed: int) -> list[int]:
    """Voice recordings of 8 to 40 KiB (0.5 to 2.5 s of 8 kHz 16-bit audio), skewed short."""
    rng = random.Random(seed)
    return [int(8 * KiB * 5 ** (rng.random() ** 2)) for _ in range(count)]


def make_homes(container: Any, first: int, count: int) -> list[Customer]:
    """`count` households, each an owner (password sign-in, no camera: no MFA duty) and
    a voice device; committed `HOMES_PER_COMMIT` at a time."""
    from tutela.households.models import AccountRole
    from tutela.households.service import AdultSpec, DeviceSpec, HomeSpec, create_home

    password_hash = container.hasher.hash(PASSWORD)  # the same password for every owner
    made: list[Customer] = []
    for start in range(first, first + count, HOMES_PER_COMMIT):
        with container.stores.session() as session:
            for n in range(start, min(start + HOMES_PER_COMMIT, first + count)):
                email = f"customer{n}@bench.tutela.test"
                spec = HomeSpec(
                    adults=(AdultSpec(f"Customer {n}", email, password_hash, AccountRole.OWNER),),
                    devices=(DeviceSpec("voice", "Kitchen speaker"),),
                )
                home = create_home(
                    session,
                    container.vault.keys,
                    spec=spec,
                    now=container.clock.now(),
                    commit=False,
                )
                made.append(
                    Customer(
                        n,
                        email,
                        home.household_id,
                        home.adult_profiles[email],
                        next(iter(home.device_tokens)),
                    )
                )
            session.commit()
    return made


def record_voice(
    container: Any, blobs: Any, customer: Customer, sizes: list[int], pool: bytes
) -> Customer:
    """The owner's recordings, written as ingestion writes them; rows inserted in batches."""
    from sqlalchemy import Table, insert

    from tutela.core.ids import uuid7
    from tutela.vault import crypto
    from tutela.vault.models import ItemState, MediaItem
    from tutela.vault.service import blob_key, item_aad

    vault = container.vault
    hh, profile_id = customer.household_id, customer.profile_id
    now = container.clock.now()
    rows: list[dict[str, Any]] = []
    for n, size in enumerate(sizes):
        item_id = uuid7()
        key = vault.keys.create_item_key(
            household_id=hh, profile_id=profile_id, item_id=item_id, now=now
        )
        enc_key, mac_key = crypto.item_subkeys(key)
        sealer = crypto.StreamSealer(
            enc_key, aad=item_aad(hh, item_id), chunk_size=vault.chunk_size, mac_key=mac_key
        )
        start = (n * 7919 + customer.number * 104729) % (len(pool) - size)
        name = blob_key(hh, profile_id, item_id)
        sealed = blobs.write(name, sealer.seal([pool[start : start + size]]))
        captured = now - timedelta(days=30) + timedelta(seconds=n * 60)
        rows.append(
            {
                "household_id": hh,
                "id": item_id,
                "profile_id": profile_id,
                "device_id": customer.device_id,
                "kind": "voice",
                "subject_class": "adult",  # the customer is the household's owner
                "media_type": "audio/wav",
                "captured_at": captured,
                "received_at": captured + timedelta(seconds=2),
                "state": ItemState.ACTIVE.value,
                "source_item_id": None,
                "size": sealer.plain_size,
                "content_mac": sealer.digest,
                "blob_key": name,
                "sealed_size": sealed,
                "sealed_fields": None,
            }
        )
    table = MediaItem.__table__
    assert isinstance(table, Table)
    with container.stores.session() as session:
        for at in range(0, len(rows), ROWS_PER_INSERT):
            session.execute(insert(table), rows[at : at + ROWS_PER_INSERT])
        session.commit()
    return Customer(
        customer.number,
        customer.email,
        hh,
        profile_id,
        customer.device_id,
        tuple(r["id"] for r in rows),
    )


def populate(container: Any, *, customers: int, recordings: int, big: int) -> list[Customer]:
    """`customers` homes of `recordings` each, then one more home (the last) of `big`."""
    from tutela.vault.blobs import LocalBlobStore

    settings = container.settings
    if settings.blob_store == "local":
        blobs: Any = LocalBlobStore(settings.blob_path, fsync=False)  # synced once, later
    else:
        blobs = container.vault.blobs
    pool = os.urandom(4 * MiB)
    total = customers + (1 if big else 0)
    # The first home alone: the key store makes its service keys on first use, and two
    # threads doing that at once collide (see `KeyStore.service_key`).
    made = make_homes(container, 0, 1)
    rest = range(1, total)
    share = max(1, -(-len(rest) // THREADS))
    parts = [rest[at : at + share] for at in range(0, len(rest), share)]
    with ThreadPoolExecutor(THREADS) as workers:
        for part in workers.map(lambda r: make_homes(container, r.start, len(r)), parts):
            made += part

    def fill(customer: Customer) -> Customer:
        count = big if big and customer.number == total - 1 else recordings
        sizes = recording_sizes(count, seed=customer.number)
        return record_voice(container, blobs, customer, sizes, pool)

    # Key-store commits and file creation wait on the disk: a few threads overlap them.
    with ThreadPoolExecutor(THREADS) as workers:
        return list(workers.map(fill, made))


# --- the raw floor ----------------------------------------------------------------------------


def floor_tables() -> tuple[list[str], list[str]]:
    """Tables holding a household's rows, children before parents: main store, key store.

    The audit log and the erasure requests are kept (they are the record of the erasure).
    """
    import tutela.db.registry  # noqa: F401  (every part's tables)
    from tutela.db.base import Base, KeyBase

    kept = {"audit_events", "erasure_requests"}
    main = [
        t.name
        for t in reversed(Base.metadata.sorted_tables)
        if "household_id" in t.c and t.name not in kept
    ]
    keys = [t.name for t in reversed(KeyBase.metadata.sorted_tables) if "household_id" in t.c]
    return [*main, "households"], keys


def raw_floor(store: str, settings: Any, customer: Customer) -> dict[str, float]:
    """One DELETE per table of the household's rows and its key rows, each store committed,
    and `shutil.rmtree` of its blob folder: the least the same deletion can cost."""
    main_tables, key_tables = floor_tables()
    folder = settings.blob_path / str(customer.household_id)
    assert folder.is_dir(), folder
    if store == "postgresql":
        main: Any = psycopg.connect(settings.main_url)
        keys: Any = psycopg.connect(settings.keys_url)
        hh: Any = customer.household_id
        mark = "%s"
    else:
        main = sqlite_connect(settings.main_url.removeprefix("sqlite:///"))
        keys = sqlite_connect(settings.keys_url.removeprefix("sqlite:///"))
        hh = customer.household_id.hex  # how SQLAlchemy's Uuid keeps them
        mark = "?"
    deleted = 0
    try:
        started = time.perf_counter()
        for table in main_tables:
            column = "id" if table == "households" else "household_id"
            sql = f"DELETE FROM {table} WHERE {column} = {mark}"  # noqa: S608 (constants)
            deleted += main.execute(sql, (hh,)).rowcount
        main.commit()
        rows_done = time.perf_counter()
        key_rows = 0
        for table in key_tables:
            sql = f"DELETE FROM {table} WHERE household_id = {mark}"  # noqa: S608 (constants)
            key_rows += keys.execute(sql, (hh,)).rowcount
        keys.commit()
        keys_done = time.perf_counter()
        shutil.rmtree(folder)
        removed = time.perf_counter()
    finally:
        main.close()
        keys.close()
    if deleted < len(customer.items) or key_rows < len(customer.items):
        raise RuntimeError("the floor deleted less than the customer's items: wrong ids")
    return {
        "floor_ms": (removed - started) * 1000,
        "rows_ms": (rows_done - started) * 1000,
        "keys_ms": (keys_done - rows_done) * 1000,
        "rm_ms": (removed - keys_done) * 1000,
    }


def remaining(store: str, settings: Any, households: list[uuid.UUID]) -> dict[str, int]:
    """What is left of erased households: item rows, item keys, household rows, blob files."""
    if store == "postgresql":
        main: Any = psycopg.connect(settings.main_url)
        keys: Any = psycopg.connect(settings.keys_url)
        ids: Any = list(households)
        where = "= ANY(%s)"
    else:
        main = sqlite_connect(settings.main_url.removeprefix("sqlite:///"))
        keys = sqlite_connect(settings.keys_url.removeprefix("sqlite:///"))
        ids = [h.hex for h in households]
        where = f"IN ({','.join('?' * len(ids))})"
    params = (ids,) if store == "postgresql" else ids

    def count(conn: Any, table: str, column: str) -> int:
        sql = f"SELECT count(*) FROM {table} WHERE {column} {where}"  # noqa: S608 (constants)
        return int(conn.execute(sql, params).fetchone()[0])

    try:
        counts = {
            "items": count(main, "items", "household_id"),
            "households": count(main, "households", "id"),
            "item_keys": count(keys, "item_keys", "household_id"),
        }
    finally:
        main.close()
        keys.close()
    if settings.blob_store == "local":
        counts["blob_files"] = sum(
            1
            for h in households
            for p in (Path(settings.blob_path) / str(h)).rglob("*")
            if p.is_file()
        )
    return counts
