"""Waking erasure workers the moment work arrives: PostgreSQL LISTEN/NOTIFY between
processes, an in-process event within one; polling stays the fallback.

Whoever records or re-queues a request calls `announce(session)` inside that transaction
and `local()` after its commit. A worker loop calls `wait(timeout)` between passes: it
returns as soon as either arrives, else after `timeout`, so a lost notification costs at
most one poll interval and never a request (S7). One waiter per process: `wait` clears the
event it returns on.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

CHANNEL = "tutela_erasure"
LISTENER_NAME = "tutela-wakeup"
"""The listener connection's `application_name`, as `pg_stat_activity` shows it."""
STOP_CHECK_SECONDS = 0.5
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0

log = logging.getLogger("tutela.erasure")


class Wakeup(Protocol):
    def announce(self, session: Session) -> None:
        """Wake other processes' workers when this session's transaction commits."""

    def local(self) -> None:
        """Wake this process's worker (after a commit)."""

    def wait(self, timeout: float) -> bool:
        """Until woken (True) or `timeout` seconds have passed (False)."""

    def close(self) -> None:
        """Stop listening; a worker waiting returns at once."""


class LocalWakeup:
    """One process's wake-up: the embedded store (SQLite), where no other process is told,
    and the fake for tests. Workers of other processes over the same files poll."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def announce(self, session: Session) -> None:
        pass

    def local(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(max(timeout, 0.0))
        # Cleared before the pass it starts: what arrives during the pass wakes the next.
        self._event.clear()
        return woken

    def close(self) -> None:
        self._event.set()


class PostgresWakeup(LocalWakeup):
    """NOTIFY in the recording transaction (delivered at commit, dropped on rollback), and
    a listener on a connection of its own, opened by the first `wait`: an API process that
    never waits (`TUTELA_EMBEDDED_WORKER=false`) holds none."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None

    def announce(self, session: Session) -> None:
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    def wait(self, timeout: float) -> bool:
        with self._lock:
            if self._listener is None and not self._stopping.is_set():
                self._listener = threading.Thread(
                    target=self._listen, name=LISTENER_NAME, daemon=True
                )
                self._listener.start()
        return super().wait(timeout)

    def close(self) -> None:
        self._stopping.set()
        super().close()
        with self._lock:
            listener = self._listener
        if listener is not None:
            listener.join(timeout=2 * STOP_CHECK_SECONDS)

    def _listen(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = FIRST_BACKOFF_SECONDS
                    # Whatever was recorded while nobody listened (before the first
                    # connection, or while reconnecting) is looked for once now.
                    self.local()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=STOP_CHECK_SECONDS):
                            self.local()
            except Exception as exc:
                # Class only: a connection error's message can name hosts and users.
                log.warning("erasure wake-up listener disconnected: %s", type(exc).__name__)
            self._stopping.wait(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)

    def _connect(self) -> psycopg.Connection[TupleRow]:
        cargs, params = self._engine.dialect.create_connect_args(self._engine.url)
        # Named, so operators see it in `pg_stat_activity`; a bounded connect and
        # keepalives find a server that is unreachable or vanished without a word.
        params.update(
            application_name=LISTENER_NAME,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        return psycopg.connect(*cargs, **params, autocommit=True)


def wakeup_for(engine: Engine) -> Wakeup:
    """The wake-up for the main store: NOTIFY on PostgreSQL, this process alone on SQLite."""
    if engine.dialect.name == "postgresql":
        return PostgresWakeup(engine)
    return LocalWakeup()
