"""Whether subjects were erased, by their tombstones in the key store (S8): what other
parts ask before acting on a row a restored backup may have brought back."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select

from tutela.db.engine import Stores
from tutela.erasure.jobs import chunks
from tutela.erasure.models import Tombstone
from tutela.erasure.scope import digest, digests
from tutela.vault.keystore import KeyStore


def any_erased(
    stores: Stores,
    keys: KeyStore,
    named: Sequence[tuple[str, uuid.UUID]],
    *,
    now: datetime,
) -> bool:
    """True when any of `named` (`("household" | "account" | "profile" | "item", id)`)
    has a tombstone. One small query, whatever the number of names."""
    if not named:
        return False
    wanted = [
        and_(
            Tombstone.subject_kind == kind,
            Tombstone.subject_digest == digest(keys, kind, value, now=now),
        )
        for kind, value in named
    ]
    with stores.key_sessions() as ks:
        return ks.scalar(select(Tombstone.request_id).where(or_(*wanted)).limit(1)) is not None


def tombstoned(
    stores: Stores, keys: KeyStore, subject_kind: str, ids: Iterable[uuid.UUID], *, now: datetime
) -> set[uuid.UUID]:
    """Which of `ids` were erased (their tombstone exists)."""
    by_digest = digests(keys, subject_kind, ids, now=now)
    found: set[uuid.UUID] = set()
    names = list(by_digest)
    with stores.key_sessions() as ks:
        for part in chunks(names, 1000):
            for d in ks.scalars(
                select(Tombstone.subject_digest).where(
                    Tombstone.subject_kind == subject_kind, Tombstone.subject_digest.in_(part)
                )
            ):
                found.add(by_digest[d])
    return found
