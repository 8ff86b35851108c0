"""What an erasure's scope selects: the items it names, with their derived artifacts.

Run once, by `mark` (item scopes, batches) or `collect` (profiles, households), and once
more at `verify` for item scopes (did an upload join the scope meanwhile?); every other
step works on the ids the job carries. Sets of ids are bound as one parameter
(`tutela.db.idsets`), so the plan is the same for one item and for a batch.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select

from tutela.db.idsets import any_of, pair_in
from tutela.erasure.models import ScopeKind
from tutela.erasure.scope import Scope
from tutela.vault.models import MediaItem


def primary(scope: Scope, *, postgresql: bool) -> Any:
    """The condition on items that the scope names directly."""
    if scope.kind is ScopeKind.BATCH:
        pairs = [(m.household_id, m.item_id) for m in scope.members]
        return pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=postgresql)
    conds: list[Any] = [MediaItem.household_id == scope.household_id]
    if scope.kind is ScopeKind.ITEM:
        conds.append(MediaItem.id == scope.item_id)
    elif scope.kind in (ScopeKind.ITEMS, ScopeKind.PROFILE):
        conds.append(MediaItem.profile_id == scope.profile_id)
    if scope.kind is ScopeKind.ITEMS:
        if scope.item_ids:
            conds.append(any_of(MediaItem.id, scope.item_ids, postgresql=postgresql))
        if scope.kinds:
            conds.append(MediaItem.kind.in_(scope.kinds))
        if scope.since is not None:
            conds.append(MediaItem.captured_at >= scope.since)
        if scope.until is not None:
            conds.append(MediaItem.captured_at < scope.until)
    return and_(*conds)


def items_query(scope: Scope, *, postgresql: bool, columns: tuple[Any, ...] = ()) -> Any:
    """Items in scope, with every derived artifact of them, whatever their state."""
    cols = (
        MediaItem.household_id,
        MediaItem.id,
        MediaItem.profile_id,
        MediaItem.blob_key,
        MediaItem.kind,
        MediaItem.source_item_id,
        *columns,
    )
    named = primary(scope, postgresql=postgresql)
    if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
        return select(*cols).where(named)
    if scope.kind is ScopeKind.BATCH:
        pairs = [(m.household_id, m.item_id) for m in scope.members]
        derived = pair_in(
            MediaItem.household_id, MediaItem.source_item_id, pairs, postgresql=postgresql
        )
        return select(*cols).where(or_(named, derived))
    sources = select(MediaItem.id).where(named)
    return select(*cols).where(
        MediaItem.household_id == scope.household_id,
        or_(named, MediaItem.source_item_id.in_(sources)),
    )
