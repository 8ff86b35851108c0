"""Whether subjects were erased, by their tombstones in the key store (S8): what other
parts ask before acting on a row a restored backup may have brought back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select

from tutela.db.engine import Stores
from tutela.erasure.models import Tombstone
from tutela.erasure.scope import digest
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
