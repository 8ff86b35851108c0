"""What is held about a profile, by category: counts, bytes, oldest and newest (C6, C2).

A parent's right to review a child's information (C6) starts with knowing what kinds of
it are held: each category is counted in one grouped query over the items' metadata (no
item is opened, no key is unwrapped), and described in plain words, saying which of it
the COPPA Rule counts as a child's personal information (C2).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tutela.vault.models import ItemKind, ItemState, MediaItem


@dataclass(frozen=True)
class Words:
    title: str
    what: str
    """What the category is, for anyone."""
    child: str
    """What it means when the profile is a child's (C2)."""


CATEGORY_WORDS: Final[Mapping[ItemKind, Words]] = {
    ItemKind.VOICE: Words(
        "Voice recordings",
        "Audio the voice assistant recorded after it heard its wake word.",
        "A child's voice is the child's personal information (COPPA, C2).",
    ),
    ItemKind.TRANSCRIPT: Words(
        "Transcripts",
        "The words of a voice recording written out as text, made from the recording; "
        "deleted with it.",
        "Made from the child's voice, so personal information like the recording (C2).",
    ),
    ItemKind.VIDEO: Words(
        "Video clips",
        "Video the home's cameras recorded when they saw movement.",
        "A child's image is the child's personal information (COPPA, C2).",
    ),
    ItemKind.SNAPSHOT: Words(
        "Camera snapshots",
        "Still pictures taken by the home's cameras.",
        "A child's image is the child's personal information (COPPA, C2).",
    ),
    ItemKind.THUMBNAIL: Words(
        "Clip thumbnails",
        "Small pictures made from a video clip to show it in a list; deleted with the clip.",
        "They show the child's image, so they are personal information (C2).",
    ),
    ItemKind.LOCATION: Words(
        "Locations",
        "Points reported by phones and devices: where the person was, and when.",
        "A child's geolocation is the child's personal information (COPPA, C2).",
    ),
}
"""Plain words for each kind, in the order a summary lists them."""


@dataclass(frozen=True)
class Category:
    """One kind of data held about one profile."""

    kind: ItemKind
    count: int
    total_bytes: int
    oldest_captured_at: datetime | None
    newest_captured_at: datetime | None

    @property
    def words(self) -> Words:
        return CATEGORY_WORDS[self.kind]


def categories(
    session: Session,
    *,
    household_id: uuid.UUID,
    profile_ids: Collection[uuid.UUID],
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[uuid.UUID, list[Category]]:
    """Every kind for each profile (zero when none is held), in one grouped query;
    captured in [since, until) when given (what a time range's erasure would take).

    Only live items count: what is under erasure is already unreadable and listed nowhere.
    The query stays within one household and walks its (household, profile, captured)
    index, so it touches one shard and no item's content.
    """
    wanted = sorted(set(profile_ids))
    found: dict[tuple[uuid.UUID, str], Category] = {}
    if wanted:
        query = (
            select(
                MediaItem.profile_id,
                MediaItem.kind,
                func.count(),
                func.coalesce(func.sum(MediaItem.size), 0),
                func.min(MediaItem.captured_at),
                func.max(MediaItem.captured_at),
            )
            .where(
                MediaItem.household_id == household_id,
                MediaItem.profile_id.in_(wanted),
                MediaItem.state == ItemState.ACTIVE,
            )
            .group_by(MediaItem.profile_id, MediaItem.kind)
        )
        if since is not None:
            query = query.where(MediaItem.captured_at >= since)
        if until is not None:
            query = query.where(MediaItem.captured_at < until)
        for profile_id, kind, count, total, oldest, newest in session.execute(query):
            if kind not in set(ItemKind):
                continue
            found[(profile_id, kind)] = Category(
                ItemKind(kind), int(count), int(total), oldest, newest
            )
    return {
        p: [found.get((p, k.value), Category(k, 0, 0, None, None)) for k in CATEGORY_WORDS]
        for p in wanted
    }
