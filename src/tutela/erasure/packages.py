"""Export packages in an erasure: sealed copies of a profile's items (C6, A5, A8).

A package is not an item, but it is erased like one: its key is an item key under the
profile (named by the package's id), its blob lies under the profile's prefix, and its
row is keyed by the household and the profile. A profile's or a household's erasure
therefore removes packages with everything else of theirs. An item scope or a batch
reaches a package in two ways, both here: a batch names it (its download link expired),
or it holds a copy of an item being erased (it was made after the item arrived), since
deletion reaches every copy (A5). Rows shaped like `selection.items_query`'s join the
job's members, so the keys, blobs and remnant steps treat them as items; the export's
row is kept as the record that a copy was made, without its package.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, func, literal, null, select, update
from sqlalchemy.orm import Session

from tutela.db.idsets import pair_in
from tutela.erasure.scope import Scope
from tutela.exports.models import Export, ExportState
from tutela.vault.models import MediaItem

KIND: Final = "export"
"""What a receipt counts a package as."""
TABLES: Final = ("exports",)
"""Main-store tables a package's id is kept in (the remnant check's page scan)."""
ITEMS_ERASED: Final = "items_erased"


def reached(session: Session, scope: Scope, rows: Sequence[Any], *, postgresql: bool) -> list[Any]:
    """The packages an item scope's or a batch's erasure reaches, beside its `rows`."""
    cols = (
        Export.household_id,
        Export.package_id.label("id"),
        Export.profile_id,
        Export.blob_key,
        literal(KIND).label("kind"),
        null().label("source_item_id"),
    )
    found: dict[tuple[uuid.UUID, uuid.UUID], Any] = {}
    if scope.members:
        named = [(m.household_id, m.item_id) for m in scope.members]
        for row in session.execute(
            select(*cols).where(
                pair_in(Export.household_id, Export.package_id, named, postgresql=postgresql)
            )
        ):
            found[(row.household_id, row.id)] = row
    profiles = sorted({(r.household_id, r.profile_id) for r in rows})
    if profiles:
        live = session.execute(
            select(*cols, Export.started_at).where(
                pair_in(Export.household_id, Export.profile_id, profiles, postgresql=postgresql),
                Export.package_id.is_not(None),
            )
        ).all()
        if live:
            owners = {(p.household_id, p.profile_id) for p in live}
            first = _first_received(session, rows, owners, postgresql=postgresql)
            for p in live:
                since = first.get((p.household_id, p.profile_id))
                if since is not None and p.started_at is not None and p.started_at >= since:
                    found[(p.household_id, p.id)] = p
    return list(found.values())


def _first_received(
    session: Session,
    rows: Sequence[Any],
    profiles: set[tuple[uuid.UUID, uuid.UUID]],
    *,
    postgresql: bool,
) -> dict[tuple[uuid.UUID, uuid.UUID], datetime]:
    """When the earliest of the erased items of each profile arrived: a package made
    since then holds a copy of it (packages take what had arrived when they started)."""
    pairs = [(r.household_id, r.id) for r in rows if (r.household_id, r.profile_id) in profiles]
    if not pairs:
        return {}
    query = (
        select(MediaItem.household_id, MediaItem.profile_id, func.min(MediaItem.received_at))
        .where(pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=postgresql))
        .group_by(MediaItem.household_id, MediaItem.profile_id)
    )
    return {(h, p): at for h, p, at in session.execute(query) if at is not None}


def strip(
    session: Session,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    request_id: uuid.UUID,
    now: datetime,
    postgresql: bool,
) -> None:
    """The `rows` step for packages: the export's row forgets its package (key and blob are
    gone already) and says it expired; one erased for its items says so (`items_erased`)."""
    if not pairs:
        return
    session.execute(
        update(Export)
        .where(pair_in(Export.household_id, Export.package_id, pairs, postgresql=postgresql))
        .values(
            reason=case((Export.state == ExportState.EXPIRED, Export.reason), else_=ITEMS_ERASED),
            state=ExportState.EXPIRED,
            package_id=None,
            blob_key=None,
            lease_until=None,
            lease_owner=None,
            expired_at=func.coalesce(Export.expired_at, now),
            erasure_request_id=func.coalesce(Export.erasure_request_id, request_id),
        )
        .execution_options(synchronize_session=False)
    )


def remaining(
    session: Session, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]], *, postgresql: bool
) -> int:
    """Export rows still naming one of these packages (the remnant check, A8)."""
    if not pairs:
        return 0
    query = (
        select(func.count())
        .select_from(Export)
        .where(pair_in(Export.household_id, Export.package_id, pairs, postgresql=postgresql))
    )
    return int(session.scalar(query) or 0)
