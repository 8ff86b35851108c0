"""Routes of the categories of data held: per profile, and for every profile one sees (C6).

Thin: visible profiles come from `households`, the counts from `vault.summary`. A profile
the account may not see, another household's included, answers 404 `not_found`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from tutela.core.errors import NotFound
from tutela.deps import AppContainer, CurrentReader, DbSession
from tutela.households import service as households
from tutela.households.models import ProfileKind
from tutela.households.service import ProfileView
from tutela.vault.summary import Category, categories

router = APIRouter(prefix="/api/v1", tags=["items"])


class CategoryOut(BaseModel):
    kind: str
    title: str
    description: str
    """What the category is, in plain words; for a child, what the COPPA Rule makes of it."""
    count: int
    total_bytes: int
    oldest_captured_at: datetime | None
    newest_captured_at: datetime | None

    @classmethod
    def of(cls, category: Category, *, child: bool) -> CategoryOut:
        words = category.words
        return cls(
            kind=category.kind.value,
            title=words.title,
            description=f"{words.what} {words.child}" if child else words.what,
            count=category.count,
            total_bytes=category.total_bytes,
            oldest_captured_at=category.oldest_captured_at,
            newest_captured_at=category.newest_captured_at,
        )


class ProfileSummaryOut(BaseModel):
    profile_id: uuid.UUID
    profile_kind: str
    name: str
    count: int
    total_bytes: int
    categories: list[CategoryOut]

    @classmethod
    def of(cls, view: ProfileView, held: list[Category]) -> ProfileSummaryOut:
        child = view.kind == ProfileKind.CHILD
        return cls(
            profile_id=view.id,
            profile_kind=view.kind,
            name=view.name,
            count=sum(c.count for c in held),
            total_bytes=sum(c.total_bytes for c in held),
            categories=[CategoryOut.of(c, child=child) for c in held],
        )


def summaries(
    session: DbSession,
    container: AppContainer,
    *,
    household_id: uuid.UUID,
    profile_ids: set[uuid.UUID],
) -> list[ProfileSummaryOut]:
    """The summary of each of `profile_ids` (visible ones only: the caller checks)."""
    views = households.list_profiles(
        session, container.vault.keys, household_id=household_id, profile_ids=profile_ids
    )
    held = categories(session, household_id=household_id, profile_ids=profile_ids)
    return [ProfileSummaryOut.of(v, held[v.id]) for v in views]


@router.get("/summary", response_model=list[ProfileSummaryOut])
def every_summary(
    reader: CurrentReader, session: DbSession, container: AppContainer
) -> list[ProfileSummaryOut]:
    """What is held about each profile this account sees (its own, its children's)."""
    return summaries(
        session, container, household_id=reader.household_id, profile_ids=set(reader.profile_ids)
    )


@router.get("/profiles/{profile_id}/summary", response_model=ProfileSummaryOut)
def profile_summary(
    profile_id: uuid.UUID, reader: CurrentReader, session: DbSession, container: AppContainer
) -> ProfileSummaryOut:
    """What is held about one profile, per kind: count, bytes, oldest and newest (C6)."""
    if profile_id not in reader.profile_ids:
        raise NotFound("No such profile.", code="not_found")
    (found,) = summaries(
        session, container, household_id=reader.household_id, profile_ids={profile_id}
    )
    return found
