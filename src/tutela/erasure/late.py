"""Requests running late: one warning per request at 80% of its completion limit (S7, S8).

The warning goes to the audit log and, as one notice of counts only, to the operator's
team. Failed and blocked requests count as open, so they are warned about too.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from tutela.audit.service import AuditTag, record
from tutela.db.engine import Stores
from tutela.erasure.jobs import OPEN
from tutela.erasure.models import ErasureRequest
from tutela.settings import Settings
from tutela.vault.keystore import KeyStore

log = logging.getLogger("tutela.erasure")


def warn_late(stores: Stores, keys: KeyStore, settings: Settings, *, now: datetime) -> int:
    """Warn of every open request past its warning point not yet warned of; how many."""
    from tutela.notices.service import NoticeKind, enqueue  # noqa: PLC0415

    percent = round(settings.erasure_warn_fraction * 100)
    with stores.session() as session:
        rows = session.scalars(
            select(ErasureRequest).where(
                ErasureRequest.status.in_(OPEN),
                ErasureRequest.warn_at <= now,
                ErasureRequest.warned_at.is_(None),
            )
        ).all()
        for row in rows:
            row.warned_at = now
            record(
                session,
                tag=AuditTag.ERASURE_DEADLINE_WARNING,
                actor="system",
                now=now,
                subject=f"erasure:{row.id}",
            )
        if rows:
            enqueue(
                session,
                keys,
                kind=NoticeKind.ERASURE_DEADLINE,
                owner=None,
                params={"at": now.isoformat(), "count": str(len(rows)), "percent": str(percent)},
                now=now,
            )
        session.commit()
    if rows:
        log.warning("%d erasure requests passed %d%% of their limit", len(rows), percent)
    return len(rows)
