"""The withdrawing side of consent freshness (C6): a session that appends a withdrawal
on PostgreSQL returns from its commit only once every checker with a live lease has
applied it (the argument is in `consent/freshness.py`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from tutela.consent.freshness import SETTLE_LIMIT_SECONDS

log = logging.getLogger("tutela.consent")

_PENDING = "tutela.consent.withdrawal"
_WROTE = "tutela.consent.wrote"


def wrote_consent(session: Session) -> bool:
    """Whether this session appended consent events not yet committed (then its own
    checks read through it, to see them)."""
    return bool(session.info.get(_WROTE))


def appended(session: Session, *, withdrawal: bool) -> None:
    """Called by the ledger right after it appends events in `session`. For a
    withdrawal on PostgreSQL, the session's commit returns only once every live checker
    has applied it (`settle`)."""
    session.info[_WROTE] = True
    bind = session.get_bind()
    if withdrawal and bind.dialect.name == "postgresql":
        n = session.execute(
            text("SELECT current_setting('tutela.consent_withdrawal', true)")
        ).scalar()
        if n:
            session.info[_PENDING] = max(int(n), session.info.get(_PENDING, 0))
    if not session.info.get("tutela.consent.hooked"):
        session.info["tutela.consent.hooked"] = True
        engine = bind if isinstance(bind, Engine) else bind.engine
        event.listen(session, "after_commit", _after_commit(engine))
        event.listen(session, "after_rollback", _forget)


def _after_commit(engine: Engine) -> Callable[[Session], None]:
    def hook(session: Session) -> None:
        n = session.info.pop(_PENDING, None)
        session.info.pop(_WROTE, None)
        if n is not None:
            settle(engine, n)

    return hook


def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_WROTE, None)


def settle(engine: Engine, n: int, *, limit: float = SETTLE_LIMIT_SECONDS) -> int:
    """Wait until every checker with a live lease has acknowledged withdrawal `n` (or
    its lease is over). Returns how many checkers were still behind at the limit (0
    unless a checker renews without acknowledging, which it never should)."""
    deadline = time.monotonic() + limit
    delay = 0.0005
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while True:
            behind = int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM consent_checkers "
                        "WHERE acked < :n AND expires_at > clock_timestamp()"
                    ),
                    {"n": n},
                ).scalar_one()
            )
            if behind == 0 or time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(2 * delay, 0.005)
    if behind:
        log.error("consent withdrawal %d not acknowledged by %d checkers", n, behind)
    return behind
