"""Engine and session factories for the main store and the key store."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import Executable

BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite statement waits for another connection's lock before failing."""
CHECKPOINT_TRY_MS = 200
CHECKPOINT_WAIT_SECONDS = 10.0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # secure_delete overwrites freed pages with zeros, so a deleted row's bytes do not
    # linger in the file (COPPA C1, NIST SP 800-88 S6 for the embedded store).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with Tutela's connection settings; SQLite folders and files are created.

    Bound parameters are never shown in SQLAlchemy's error messages: they would carry
    personal data into logs.
    """
    parsed = make_url(url)
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the start; SQLite gives its -wal and -shm files the same mode.
            # Only a file that does not exist yet is opened here: closing a descriptor on
            # a live database file would drop every SQLite lock this process holds on it.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
    # A pool large enough for every request in flight in one process, so connections are
    # reused, not reopened; recycled hourly instead of pinged before each use.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_recycle", 3600)
    return create_engine(url, **kwargs)


def purge_journal(engine: Engine, *, wait_seconds: float = CHECKPOINT_WAIT_SECONDS) -> None:
    """Make deleted rows leave the SQLite write-ahead log too (NIST SP 800-88, S6; C1).

    `secure_delete` zeroes freed pages in the database file, but old copies of those
    pages stay in the `-wal` file until it is truncated. A TRUNCATE checkpoint copies the
    log back and cuts it to zero bytes. It cannot while a reader (in any process) still
    reads from the log: it is tried again for `wait_seconds` in all, then this raises,
    and the caller's step is retried later. Each try waits a short busy timeout, not the
    connections' 10 s, so that the whole wait stays bounded (well inside an erasure
    job's lease) however many tries the readers cause. No-op on PostgreSQL, whose WAL
    and free space are the server's to manage.
    """
    if engine.dialect.name != "sqlite":
        return
    deadline = time.monotonic() + wait_seconds
    with engine.connect() as conn:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={CHECKPOINT_TRY_MS}")
        try:
            while True:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
                if not busy:
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    raise RuntimeError("the write-ahead log could not be truncated: readers kept it busy")


def rewrite_free_space(engine: Engine) -> None:
    """Rewrite every page of an SQLite file, so no free space keeps erased bytes (C1, S6).

    `secure_delete` zeroes a cell where it is deleted, and a freed page, but not the
    earlier copies of the cell: when SQLite rebalances a b-tree page it packs the cells
    anew and leaves their old bytes in the page's unallocated space, between the cell
    pointers and the cell content, where a row deleted since then still lies. VACUUM
    rebuilds the database from its live rows and writes every page back through SQLite's
    own pager and locks: other processes with the file open see one more transaction,
    never a file swapped under them (which `VACUUM INTO` and a rename would do). The
    TRUNCATE checkpoint then puts the new pages in the file, cuts the file to its new
    length and empties the WAL. No-op on PostgreSQL.

    Its cost is a rewrite of the whole file, so the raw scan calls it only when it finds
    something (`erasure/remnants.py`).
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM")
    purge_journal(engine)


@dataclass
class Stores:
    """The two databases: metadata and ciphertext in `main`, keys in `keys`."""

    main: Engine
    keys: Engine

    def __post_init__(self) -> None:
        self.main_sessions = sessionmaker(self.main, expire_on_commit=False)
        self.key_sessions = sessionmaker(self.keys, expire_on_commit=False)

    def session(self) -> Session:
        return self.main_sessions()

    def dispose(self) -> None:
        self.main.dispose()
        self.keys.dispose()


def open_stores(main_url: str, keys_url: str, *, pool_size: int = 20) -> Stores:
    if make_url(main_url) == make_url(keys_url):
        raise ValueError("the key store must be a database apart from the main one")
    # The same pool size on SQLite: its default of 5 (+10) is fewer than the requests one
    # process serves at once (Starlette's thread pool has 40 threads).
    pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 10}
    return Stores(main=make_engine(main_url, **pool), keys=make_engine(keys_url, **pool))


def keyset_after(household: Any, row_id: Any, cursor: tuple[Any, Any]) -> ColumnElement[bool]:
    """Rows after `cursor` in (household_id, id) order: keyset pagination for sweeps that
    walk a table in short transactions."""
    return or_(household > cursor[0], and_(household == cursor[0], row_id > cursor[1]))


def pairs_in(
    columns: tuple[Any, Any],
    pairs: Sequence[tuple[Any, Any]],
    dialect: Dialect,
    *,
    raw: bool = False,
) -> ColumnElement[bool]:
    """`(a, b) IN (the pairs)`, in a form each store searches an index on (a, b) with, and
    one statement whatever the number of pairs (compiled once, then cached).

    The pairs are one bound value: on SQLite a JSON array read with `json_each` (the
    plain row-value `IN (VALUES ...)` SQLAlchemy renders is planned as a scan of the whole
    table), on PostgreSQL two arrays, unnested side by side. Values are given as the
    columns' types take them, or with `raw` as the driver gives them back (a UUID as 32
    hex digits on SQLite).
    """
    same: Callable[[Any], Any] = lambda v: v  # noqa: E731
    convert = [same if raw else c.type.bind_processor(dialect) or same for c in columns]
    found: Select[Any, Any]
    if dialect.name == "sqlite":
        data = json.dumps([[convert[0](a), convert[1](b)] for a, b in pairs])
        found = select(
            literal_column("json_extract(value, '$[0]')"),
            literal_column("json_extract(value, '$[1]')"),
        ).select_from(func.json_each(bindparam("pairs", data, type_=String)))
    else:
        found = select(
            func.unnest(bindparam("pairs_a", [a for a, _ in pairs], type_=ARRAY(columns[0].type))),
            func.unnest(bindparam("pairs_b", [b for _, b in pairs], type_=ARRAY(columns[1].type))),
        )
    return tuple_(*columns).in_(found)


def explain(conn: Connection, statement: Executable) -> list[str]:
    """The plan the store chooses for `statement` with its bound values, one line a step:
    `EXPLAIN` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite (each step's detail)."""
    sqlite = conn.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "

    def explained(
        _conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, _many: bool
    ) -> tuple[str, Any]:
        return prefix + sql, parameters

    event.listen(conn, "before_cursor_execute", explained, retval=True)
    try:
        result = conn.execute(statement)
        # The rows are the plan's, not the statement's: read them as the driver gives them.
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
    finally:
        event.remove(conn, "before_cursor_execute", explained)
    return [str(row[-1] if sqlite else row[0]) for row in rows]
