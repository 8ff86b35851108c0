"""API shapes of the vault. Built from service results, never the ORM class itself."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tutela.vault.models import MediaItem


class ItemOut(BaseModel):
    id: uuid.UUID
    profile_id: uuid.UUID
    device_id: uuid.UUID | None
    source_item_id: uuid.UUID | None
    kind: str
    media_type: str
    captured_at: datetime
    received_at: datetime
    size: int
    ephemeral: bool = Field(
        description=(
            "Used in place of typed words (C11): a voice recording whose audio was not "
            "kept, or its transcript, erased after a short time and never used for "
            "training or identification."
        )
    )

    @classmethod
    def of(cls, item: MediaItem) -> ItemOut:
        return cls(
            id=item.id,
            profile_id=item.profile_id,
            device_id=item.device_id,
            source_item_id=item.source_item_id,
            kind=item.kind,
            media_type=item.media_type,
            captured_at=item.captured_at,
            received_at=item.received_at,
            size=item.size,
            ephemeral=bool(item.ephemeral),
        )


class ItemDetail(ItemOut):
    derived: list[ItemOut] = []
    transcript: str | None = None


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


class TranscriptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_item_id: uuid.UUID
    text: str = Field(min_length=1, max_length=100_000)
    language: str | None = Field(
        default=None, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
    )


class LocationPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    captured_at: AwareDatetime
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)


class LocationBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID
    points: list[LocationPointIn] = Field(min_length=1, max_length=100_000)
