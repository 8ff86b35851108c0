"""A per-process cache of the ledger's latest events that never answers a withdrawal as a
grant once the withdrawal has returned to its caller (C6).

What is cached: for a (household, profile, purpose), its latest event of all (or that it
has none). A check at time `t` is answered from the entry when the entry's event is no
later than `t`; otherwise, and on a miss, the store is read. Entries are filled only by
reads made while the cache is trusted, and only if nothing was invalidated between the
start of the read and the store of its result.

**PostgreSQL: notifications with acknowledgements under a lease.**
- A trigger on `consent_events` NOTIFYs `tutela_consent` once per changed profile, in the
  appending (or deleting) transaction: delivered at its commit, in commit order, to every
  listening connection. A statement that appends a withdrawal first takes an advisory
  lock held to commit and a number from `consent_withdrawal_seq`, so withdrawals are
  numbered in the order they commit; the number travels in the notification.
- Each checking process listens on its own connection, and holds a row of
  `consent_checkers`: a lease (`expires_at`, renewed every `RENEW_SECONDS`) and `acked`,
  the highest withdrawal it has applied. It drops the profile's entries on each
  notification, then writes `acked`. It trusts its cache only until
  `time at the start of its last successful renewal + LEASE_SECONDS * TRUST_SHARE`; the
  store sets the lease from its own clock, read later than that start, so the store
  never sees a lease lapse before the process has stopped trusting.
- The withdrawing session waits after its commit (`withdrawals.settle`) until every
  checker with a live lease has `acked` at least its number. Withdrawals are numbered in
  commit order and delivered in commit order, so `acked >= n` means that checker has
  applied n. A checker that is stuck or cut off stops renewing; once its lease is over,
  the withdrawer stops waiting for it, and it has already stopped trusting its cache.
- A checker joins by listening first, then, under the same advisory lock (so no
  withdrawal is half-committed), reading the last number given out as its `acked`:
  anything committed later reaches its connection. It starts with an empty cache, and
  empties it again whenever it regains trust (notifications may have been lost).

So when a withdrawal has returned, every process either has applied it or no longer
answers from its cache: its very next check reads the store. Grants and deletions also
invalidate, but nobody waits for them: a grant may be refused for a moment, which is
safe.

**SQLite: a clock row read before each answer.** Triggers write a fresh random value to
`consent_clock` whenever consent events are appended or deleted, in the same
transaction. Each entry keeps the value read before the read that filled it; a check
reads the clock (a few microseconds: the file is local) and trusts only entries of the
same value. A withdrawal's commit changes it before the withdrawal returns.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy import Engine, text

CHANNEL = "tutela_consent"
LISTENER_NAME = "tutela-consent"
WITHDRAWAL_LOCK = 7_305_110_611
"""The advisory lock key that orders withdrawals (taken by the trigger, migration
6dfa3bd99360)."""
LEASE_SECONDS = 3.0
"""Longest a withdrawal waits for a checker that stopped answering."""
RENEW_SECONDS = 0.5
TRUST_SHARE = 0.9
"""The share of a lease a checker trusts its cache for: room for clocks that drift."""
MAX_ENTRIES = 200_000
"""Profiles cached per process; past it the cache starts again empty."""
SETTLE_LIMIT_SECONDS = 2 * LEASE_SECONDS
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

log = logging.getLogger("tutela.consent")

Who = tuple[uuid.UUID, uuid.UUID]
"""(household id, profile id)."""


@dataclass(frozen=True)
class Latest:
    """The latest event of one (profile, purpose): what a decision is derived from."""

    granted: bool
    notice_version: int
    at: datetime


_ABSENT: Any = object()
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy writes a datetime into SQLite: compared as text."""

_PG_LATEST = (
    "SELECT granted, notice_version, at FROM consent_events"
    " WHERE household_id = %s AND profile_id = %s AND purpose = %s{bound}"
    " ORDER BY at DESC, id DESC LIMIT 1"
)
_SQLITE_LATEST = (
    "SELECT granted, notice_version, at FROM consent_events"
    " WHERE household_id = ? AND profile_id = ? AND purpose = ?{bound}"
    " ORDER BY at DESC, id DESC LIMIT 1"
)


class LatestCache(Protocol):
    def latest(self, who: Who, purpose: str, at: datetime) -> Latest | None:
        """The latest event no later than `at`: from the cache when trusted, else read."""

    def close(self) -> None: ...


class _Entries:
    """Entries by profile, then purpose; each with the token it was filled under."""

    def __init__(self, max_entries: int) -> None:
        self.by_profile: dict[Who, dict[str, tuple[object, Latest | None]]] = {}
        self.lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, who: Who, purpose: str) -> tuple[object, Latest | None] | None:
        of = self.by_profile.get(who)
        return None if of is None else of.get(purpose)

    def put(self, who: Who, purpose: str, token: object, value: Latest | None) -> None:
        if len(self.by_profile) >= self.max_entries:
            self.by_profile.clear()
        self.by_profile.setdefault(who, {})[purpose] = (token, value)


def _usable(found: Latest | None, at: datetime) -> bool:
    return found is None or found.at <= at


class PostgresCache:
    """The cache of one process over PostgreSQL: see the module's docstring."""

    def __init__(self, engine: Engine, *, max_entries: int = MAX_ENTRIES) -> None:
        self.engine = engine
        self.id = uuid.uuid4()
        self._own_channel = f"{CHANNEL}_{self.id.hex}"
        self._entries = _Entries(max_entries)
        self._generation = 0
        self._trusted_until = 0.0
        self._stopping = threading.Event()
        self._started = threading.Lock()
        self._listener: threading.Thread | None = None
        self._acked = 0

    # -- checks --

    def _token(self) -> int | None:
        if self._listener is None:
            self._start()
        if time.monotonic() >= self._trusted_until:
            return None
        return self._generation

    def latest(self, who: Who, purpose: str, at: datetime) -> Latest | None:
        token = self._token()
        if token is not None:
            found = self._entries.get(who, purpose)
            if found is not None and _usable(found[1], at):
                return found[1]
        value = self._read(who, purpose, None)
        if token is not None:
            with self._entries.lock:
                if self._generation == token:
                    self._entries.put(who, purpose, token, value)
        if _usable(value, at):
            return value
        return self._read(who, purpose, at)

    def _read(self, who: Who, purpose: str, at: datetime | None) -> Latest | None:
        """One indexed SELECT on a pooled connection in autocommit: one round trip."""
        raw = self.engine.raw_connection()
        try:
            conn: psycopg.Connection[TupleRow] = raw.driver_connection  # type: ignore[assignment]
            conn.autocommit = True
            try:
                params: tuple[object, ...] = (*who, purpose)
                if at is None:
                    sql = _PG_LATEST.format(bound="")
                else:
                    sql, params = _PG_LATEST.format(bound=" AND at <= %s"), (*params, at)
                row = conn.execute(sql, params, prepare=True).fetchone()
            finally:
                conn.autocommit = False
        except psycopg.OperationalError:
            raw.invalidate()
            raise
        finally:
            raw.close()
        return None if row is None else Latest(bool(row[0]), int(row[1]), row[2])

    # -- invalidation, lease --

    def _invalidate(self, payload: str) -> None:
        seq, household, profile = payload.split(" ")
        with self._entries.lock:
            self._entries.by_profile.pop((uuid.UUID(household), uuid.UUID(profile)), None)
            self._generation += 1
        self._acked = max(self._acked, int(seq))

    def _distrust(self) -> None:
        self._trusted_until = 0.0
        with self._entries.lock:
            self._entries.by_profile.clear()
            self._generation += 1

    def _start(self) -> None:
        with self._started:
            if self._listener is None and not self._stopping.is_set():
                self._listener = threading.Thread(
                    target=self._listen, name=LISTENER_NAME, daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f'LISTEN "{self._own_channel}"')  # `close` wakes it there
                    self._join(conn)
                    backoff = FIRST_BACKOFF_SECONDS
                    renew_at = time.monotonic() + RENEW_SECONDS
                    while not self._stopping.is_set():
                        wait = max(0.0, renew_at - time.monotonic())
                        got = False
                        for note in conn.notifies(timeout=wait, stop_after=1):
                            if note.channel == CHANNEL:
                                self._invalidate(note.payload)
                                got = True
                        if got or time.monotonic() >= renew_at:
                            if not self._renew(conn):
                                self._join(conn)
                            renew_at = time.monotonic() + RENEW_SECONDS
            except Exception as exc:
                # Class only: a connection error's message can name hosts and users.
                log.warning("consent cache listener disconnected: %s", type(exc).__name__)
            self._distrust()
            self._stopping.wait(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)

    def _join(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Register with an `acked` no withdrawal in flight can be behind (listening
        already); then trust an empty cache."""
        self._distrust()
        started = time.monotonic()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WITHDRAWAL_LOCK,))
            row = conn.execute("SELECT last_value, is_called FROM consent_withdrawal_seq")
            last, called = row.fetchone() or (0, False)
            self._acked = max(self._acked, int(last) if called else 0)
            conn.execute(
                "DELETE FROM consent_checkers WHERE expires_at < clock_timestamp() - "
                "interval '1 hour'"
            )
            conn.execute(
                "INSERT INTO consent_checkers (id, acked, expires_at) VALUES "
                "(%s, %s, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (id) DO UPDATE SET acked = excluded.acked, "
                "expires_at = excluded.expires_at",
                (self.id, self._acked, LEASE_SECONDS),
            )
        self._trusted_until = started + LEASE_SECONDS * TRUST_SHARE

    def _renew(self, conn: psycopg.Connection[TupleRow]) -> bool:
        """Acknowledge what was applied and extend the lease; False if the row is gone."""
        started = time.monotonic()
        row = conn.execute(
            "UPDATE consent_checkers SET acked = greatest(acked, %s), "
            "expires_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s "
            "RETURNING id",
            (self._acked, LEASE_SECONDS, self.id),
        ).fetchone()
        if row is None:
            return False
        self._trusted_until = started + LEASE_SECONDS * TRUST_SHARE
        return True

    def _connect(self) -> psycopg.Connection[TupleRow]:
        cargs, params = self.engine.dialect.create_connect_args(self.engine.url)
        params.update(
            application_name=LISTENER_NAME,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        return psycopg.connect(*cargs, **params, autocommit=True)

    @property
    def trusted(self) -> bool:
        return time.monotonic() < self._trusted_until

    def wait_trusted(self, timeout: float) -> bool:
        """Start listening and wait until the cache is trusted (tests, benchmarks)."""
        self._token()
        deadline = time.monotonic() + timeout
        while not self.trusted and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.trusted

    def close(self) -> None:
        self._stopping.set()
        self._distrust()
        if self._listener is None:
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self._own_channel})
            conn.commit()
            self._listener.join(timeout=2 * RENEW_SECONDS + 1)
            conn.execute(text("DELETE FROM consent_checkers WHERE id = :id"), {"id": self.id})
            conn.commit()


class SqliteCache:
    """The cache of one process over SQLite: see the module's docstring."""

    def __init__(self, engine: Engine, *, max_entries: int = MAX_ENTRIES) -> None:
        self.engine = engine
        self._entries = _Entries(max_entries)
        self._local = threading.local()
        self._stamp: object = _ABSENT

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            cargs, params = self.engine.dialect.create_connect_args(self.engine.url)
            conn = sqlite3.connect(str(cargs[0]), isolation_level=None, **params)
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
        return conn

    def _clock(self, conn: sqlite3.Connection) -> object:
        row = conn.execute("SELECT stamp FROM consent_clock WHERE id = 1").fetchone()
        stamp = None if row is None else row[0]
        if stamp != self._stamp:
            with self._entries.lock:
                self._entries.by_profile.clear()
                self._stamp = stamp
        return stamp

    def latest(self, who: Who, purpose: str, at: datetime) -> Latest | None:
        conn = self._conn()
        stamp = self._clock(conn)
        found = self._entries.get(who, purpose)
        if found is not None and found[0] == stamp and _usable(found[1], at):
            return found[1]
        value = self._read(conn, who, purpose, None)
        with self._entries.lock:
            self._entries.put(who, purpose, stamp, value)
        if _usable(value, at):
            return value
        return self._read(conn, who, purpose, at)

    @staticmethod
    def _read(
        conn: sqlite3.Connection, who: Who, purpose: str, at: datetime | None
    ) -> Latest | None:
        params: tuple[object, ...] = (who[0].hex, who[1].hex, purpose)
        if at is None:
            sql = _SQLITE_LATEST.format(bound="")
        else:
            sql = _SQLITE_LATEST.format(bound=" AND at <= ?")
            params += (at.astimezone(UTC).strftime(SQLITE_TIME),)
        row = conn.execute(sql, params).fetchone()
        if row is None:
            return None
        when = datetime.fromisoformat(row[2]).replace(tzinfo=UTC)
        return Latest(bool(row[0]), int(row[1]), when)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def cache_for(engine: Engine) -> PostgresCache | SqliteCache:
    if engine.dialect.name == "postgresql":
        return PostgresCache(engine)
    return SqliteCache(engine)
