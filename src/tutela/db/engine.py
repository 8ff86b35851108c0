"""Engine and session factories for the main store and the key store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # secure_delete overwrites freed pages with zeros, so a deleted row's bytes do not
    # linger in the file (COPPA C1, NIST SP 800-88 S6 for the embedded store).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with Tutela's connection settings; SQLite folders are created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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
    pool: dict[str, Any] = {}
    if make_url(main_url).get_backend_name() != "sqlite":
        pool["pool_size"] = pool_size
    return Stores(main=make_engine(main_url, **pool), keys=make_engine(keys_url, **pool))
