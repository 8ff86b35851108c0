"""How far an erasure's keys are gone: from the live stores at once, from every copy once
the key epoch they were last wrapped under is destroyed (NIST SP 800-88, S6).

A receipt and the API say exactly what was verified and no more (A8): "unreadable in the
live stores" from the moment the keys were destroyed and the remnant check found none of
them; "every copy unreadable by <time>" while the epoch lives (a dead tuple, a free page,
the WAL, a replica or a backup of the key store may still hold a wrapped copy); "every copy
unreadable since <time>" once the key source has destroyed the epoch. When the epoch is
destroyed after the request completed, its receipt is issued again, signed, with that time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from tutela.audit.service import AuditTag, record
from tutela.core.clock import as_utc
from tutela.db.engine import Stores
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequestStatus
from tutela.vault.keystore import KeyStore
from tutela.vault.models import EpochState


@dataclass(frozen=True)
class Unreadable:
    live_stores_at: datetime | None
    """When the keys were gone from the live key store."""
    every_copy_by: datetime | None
    """The latest time every copy is unreadable; None: no time bounds it (keys from before
    key epochs)."""
    every_copy_at: datetime | None
    """When every copy became unreadable (the key epoch's destruction), once it has."""
    key_epoch: int | None
    status: str = RequestStatus.COMPLETED
    """The request's status: only a completed request's check is verified (A8)."""

    @property
    def statement(self) -> str:
        if self.status == RequestStatus.FAILED:
            return "Not verified: the erasure failed, and runs again when it is retried."
        if self.live_stores_at is None:
            return "Not yet unreadable: its keys have not been destroyed."
        if self.status != RequestStatus.COMPLETED:
            return (
                "Its keys are destroyed in the live stores; the check of every store has not "
                "finished yet."
            )
        if self.every_copy_at is not None:
            return (
                "Unreadable everywhere: every copy of its keys has been unreadable since "
                f"{_show(self.every_copy_at)}."
            )
        if self.every_copy_by is None:
            return (
                "Unreadable in the live stores. Older copies of its keys (from before key "
                "epochs) may be readable from backups of the key store: no time bounds them."
            )
        return (
            f"Unreadable in the live stores; every copy unreadable by {_show(self.every_copy_by)}."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "live_stores_at": _iso(self.live_stores_at),
            "every_copy_by": _iso(self.every_copy_by),
            "every_copy_at": _iso(self.every_copy_at),
            "key_epoch": self.key_epoch,
            "statement": self.statement,
        }


def _iso(at: datetime | None) -> str | None:
    return as_utc(at).isoformat() if at is not None else None


def _show(at: datetime) -> str:
    return as_utc(at).strftime("%Y-%m-%d %H:%M UTC")


def of_row(row: ErasureRequest) -> Unreadable:
    """What a request's row says of its keys (settled by the workers' epoch pass)."""
    times = json.loads(row.step_times or "{}")
    live = datetime.fromisoformat(times["keys"]) if "keys" in times else None
    return Unreadable(
        live_stores_at=live,
        every_copy_by=row.copies_unreadable_by,
        every_copy_at=row.copies_unreadable_at,
        key_epoch=row.key_epoch,
        status=row.status,
    )


def of_request(keys: KeyStore, row: ErasureRequest) -> Unreadable:
    """What can be said of a request's keys now, asking the key store about its epoch."""
    found = of_row(row)
    if found.every_copy_at is None and row.key_epoch is not None and found.every_copy_by:
        epoch = keys.epoch(row.key_epoch)
        if epoch is not None and epoch.state == EpochState.DESTROYED:
            return Unreadable(
                found.live_stores_at,
                found.every_copy_by,
                epoch.destroyed_at,
                row.key_epoch,
                found.status,
            )
    return found


def settle(stores: Stores, keys: KeyStore, *, now: datetime) -> int:
    """Requests whose key copies a destroyed epoch covered are unreadable everywhere now.

    Records the epoch's destruction time on each, and issues a completed request's receipt
    again, signed, with that time. Idempotent; returns how many requests it settled.
    """
    destroyed = {e.seq: e for e in keys.epochs() if e.state == EpochState.DESTROYED}
    if not destroyed:
        return 0
    through = max(destroyed)
    settled = 0
    with stores.session() as session:
        rows = session.scalars(
            select(ErasureRequest).where(
                ErasureRequest.key_epoch <= through,
                ErasureRequest.copies_unreadable_at.is_(None),
                ErasureRequest.copies_unreadable_by.is_not(None),
                # Completed only: the remnant check verified its keys gone from the live
                # stores; a request still open may yet destroy more, in a newer epoch.
                ErasureRequest.status == RequestStatus.COMPLETED,
            )
        ).all()
        for row in rows:
            assert row.key_epoch is not None
            epoch = destroyed.get(row.key_epoch)
            if epoch is None or epoch.destroyed_at is None:
                continue  # settled only by its own epoch's destruction, never by a neighbour's
            at = epoch.destroyed_at
            values: dict[str, Any] = {"copies_unreadable_at": at}
            if row.receipt:
                body = json.loads(row.receipt)["receipt"]
                body["unreadable"] = Unreadable(
                    live_stores_at=_parse(body.get("unreadable", {}).get("live_stores_at")),
                    every_copy_by=row.copies_unreadable_by,
                    every_copy_at=at,
                    key_epoch=row.key_epoch,
                ).to_json()
                values["receipt"] = json.dumps(
                    receipts.sign_receipt(keys, body, now=now), sort_keys=True
                )
            session.execute(
                update(ErasureRequest).where(ErasureRequest.id == row.id).values(**values)
            )
            settled += 1
        if settled:
            record(
                session,
                tag=AuditTag.ERASURE_COPIES_UNREADABLE,
                actor="system",
                now=now,
                subject=f"key-epoch:{through}:requests:{settled}",
            )
        session.commit()
    return settled


def overdue(stores: Stores, *, now: datetime) -> list[int]:
    """Key epochs with a broken promise: a request said every copy would be unreadable by a
    time that has passed, and its epoch is not destroyed yet (the workers stopped)."""
    with stores.session() as session:
        found = session.scalars(
            select(ErasureRequest.key_epoch)
            .where(
                ErasureRequest.copies_unreadable_by < now,
                ErasureRequest.copies_unreadable_at.is_(None),
                ErasureRequest.key_epoch.is_not(None),
            )
            .distinct()
        ).all()
    return sorted(seq for seq in found if seq is not None)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
