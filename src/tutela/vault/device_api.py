"""A device's view of what it may upload, per profile and purpose (C3, C6).

`GET /api/v1/device`, with the device's token like ingestion, answers the profiles of its
household it may record for and, for each, whether uploads are accepted under each
purpose this kind of device uploads for, with the gates' own code and sentence. It holds
no names: a device knows profiles by id, and sealed fields are never opened for it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from tutela.deps import AppContainer, CurrentDevice, DbSession
from tutela.households import service as households
from tutela.vault import gates

device = APIRouter(prefix="/api/v1", tags=["ingestion"])


class PurposeStateOut(BaseModel):
    purpose: str
    kinds: list[str]
    """This device's kinds of upload that the purpose covers."""
    accepted: bool
    code: str | None
    """When refused: the code an upload would answer (`parental_consent_required`,
    `collection_refused`, `consent_withdrawn`, `fresh_consent_needed`,
    `consent_not_granted`)."""
    detail: str | None
    """When refused: a sentence to show, e.g. "A parent has stopped recordings for this
    child."."""


class ProfileStateOut(BaseModel):
    profile_id: uuid.UUID
    kind: str
    purposes: list[PurposeStateOut]


class DeviceStateOut(BaseModel):
    device_id: uuid.UUID
    kind: str
    checked_at: datetime
    profiles: list[ProfileStateOut]


@device.get("/device", response_model=DeviceStateOut)
def device_state(me: CurrentDevice, session: DbSession, container: AppContainer) -> DeviceStateOut:
    """Whether this device's uploads are taken now, per profile and purpose. The answer
    is the gates' own, from the same question, so it changes the moment consent does."""
    now = container.clock.now()
    states = gates.device_state(
        session,
        container.consent,
        device_kind=me.kind,
        profiles=households.active_profiles(session, household_id=me.household_id),
        now=now,
    )
    return DeviceStateOut(
        device_id=me.id,
        kind=me.kind,
        checked_at=now,
        profiles=[
            ProfileStateOut(
                profile_id=s.profile_id,
                kind=s.kind,
                purposes=[PurposeStateOut(**p.__dict__) for p in s.purposes],
            )
            for s in states
        ],
    )
