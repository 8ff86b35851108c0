"""What an erasure's scope selects: the items it names, with their derived artifacts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, or_, select

from tutela.db.engine import Stores
from tutela.erasure.models import ScopeKind
from tutela.erasure.scope import Scope
from tutela.vault.models import MediaItem


def primary(scope: Scope) -> Any:
    """The condition on items that the scope names directly."""
    conds: list[Any] = [MediaItem.household_id == scope.household_id]
    if scope.kind is ScopeKind.ITEM:
        conds.append(MediaItem.id == scope.item_id)
    elif scope.kind in (ScopeKind.ITEMS, ScopeKind.PROFILE):
        conds.append(MediaItem.profile_id == scope.profile_id)
    if scope.kind is ScopeKind.ITEMS:
        if scope.item_ids:
            conds.append(MediaItem.id.in_(scope.item_ids))
        if scope.kinds:
            conds.append(MediaItem.kind.in_(scope.kinds))
        if scope.since is not None:
            conds.append(MediaItem.captured_at >= scope.since)
        if scope.until is not None:
            conds.append(MediaItem.captured_at < scope.until)
    return and_(*conds)


def items_query(scope: Scope) -> Any:
    """Items in scope, with every derived artifact of them, whatever their state."""
    cols = (MediaItem.id, MediaItem.blob_key, MediaItem.kind, MediaItem.source_item_id)
    named = primary(scope)
    if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
        return select(*cols).where(named)
    sources = select(MediaItem.id).where(named)
    return select(*cols).where(
        MediaItem.household_id == scope.household_id,
        or_(named, MediaItem.source_item_id.in_(sources)),
    )


def scope_ids(stores: Stores, scope: Scope) -> list[tuple[uuid.UUID, str | None, str | None]]:
    with stores.session() as session:
        return [
            (r.id, r.blob_key, r.source_item_id) for r in session.execute(items_query(scope)).all()
        ]
