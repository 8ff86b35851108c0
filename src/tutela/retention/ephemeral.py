"""The retention sweep's pass over ephemeral voice: erase it once its short age is up (C11).

A voice recording a device marked as used only in place of typed words was never stored
(`vault.service.ingest_media`); what is left of it is its row and the transcript. Both
are ephemeral items, and both go through the one deletion path, as batch erasures with
a receipt (A5, A8), once `policy.ephemeral_voice_max_age` has passed since they arrived.
A transcript whose recording goes too (or is already being erased) is not named: the
engine erases derived artifacts with their source. Legal holds are honoured as for every
other deletion (`request_batch` counts the held items and leaves them for a later sweep).

Expired ephemeral items are read through the partial index `ix_items_ephemeral`, which
holds ephemeral items only, in keyset pages each in its own short transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, exists, not_, or_, select, tuple_
from sqlalchemy.orm import aliased

from tutela.erasure.models import RequesterKind
from tutela.erasure.scope import Member, Requester
from tutela.households.models import Profile, ProfileState
from tutela.vault.models import ItemState, MediaItem

if TYPE_CHECKING:
    from tutela.container import Container

EPHEMERAL_VOICE = Requester(RequesterKind.RETENTION, "rule:ephemeral-voice")
"""Who asks for the erasure of ephemeral voice past its age (C11)."""


@dataclass
class EphemeralOutcome:
    """What one pass found and asked for."""

    expired: int = 0
    """Ephemeral items past their age found (transcripts that go with their recording
    are not counted apart)."""
    held: int = 0
    """Of those, items a legal hold keeps for now."""
    requests: list[uuid.UUID] | None = None
    """The batch erasures requested (None on a dry run)."""


def expired_page(
    cutoff: datetime, cursor: tuple[datetime, uuid.UUID, uuid.UUID] | None, limit: int
) -> Select[uuid.UUID, uuid.UUID, uuid.UUID, datetime]:
    """Active ephemeral items of active profiles received before `cutoff`, oldest first,
    after `cursor`: one range of `ix_items_ephemeral`. A derived item whose source is
    expired too, or already being erased, is left out: it goes with its source."""
    source = aliased(MediaItem)
    goes_with_source = exists().where(
        source.household_id == MediaItem.household_id,
        source.id == MediaItem.source_item_id,
        or_(source.state != ItemState.ACTIVE, source.received_at < cutoff),
    )
    query = (
        select(MediaItem.household_id, MediaItem.id, MediaItem.profile_id, MediaItem.received_at)
        .join(
            Profile,
            and_(
                Profile.household_id == MediaItem.household_id,
                Profile.id == MediaItem.profile_id,
            ),
        )
        .where(
            # As the index's condition is written (SQLite uses it only for the same words).
            MediaItem.ephemeral,
            MediaItem.received_at < cutoff,
            MediaItem.state == ItemState.ACTIVE,
            Profile.state == ProfileState.ACTIVE,
            not_(goes_with_source),
        )
        .order_by(MediaItem.received_at, MediaItem.household_id, MediaItem.id)
        .limit(limit)
    )
    if cursor is not None:
        keys = tuple_(MediaItem.received_at, MediaItem.household_id, MediaItem.id)
        query = query.where(keys > tuple_(*cursor))
    return query


def expire_ephemeral(
    container: Container,
    *,
    now: datetime,
    max_age: timedelta,
    batch_size: int,
    dry_run: bool,
    max_batches: int | None = None,
) -> EphemeralOutcome:
    """Request the erasure of ephemeral items received more than `max_age` before `now`
    (C11): one `request_batch` per page of `batch_size`; with `dry_run`, only count."""
    cutoff = now - max_age
    outcome = EphemeralOutcome(requests=None if dry_run else [])
    cursor: tuple[datetime, uuid.UUID, uuid.UUID] | None = None
    pages = 0
    while max_batches is None or pages < max_batches:
        pages += 1
        with container.stores.session() as session:
            rows: list[Any] = list(session.execute(expired_page(cutoff, cursor, batch_size)))
        outcome.expired += len(rows)
        if rows and not dry_run:
            members = [Member(r.household_id, r.profile_id, r.id) for r in rows]
            asked = container.erasure.request_batch(members, EPHEMERAL_VOICE, hold=container.hold)
            outcome.held += asked.held
            assert outcome.requests is not None
            outcome.requests += [r for r in asked.requests if r not in outcome.requests]
        elif rows:
            outcome.held += sum(
                1 for r in rows if container.hold(r.household_id, r.profile_id, now) is not None
            )
        if len(rows) < batch_size:
            break
        last = rows[-1]
        cursor = (last.received_at, last.household_id, last.id)
    return outcome
