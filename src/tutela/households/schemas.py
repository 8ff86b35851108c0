"""API shapes of the households part."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel

from tutela.households.models import Device
from tutela.households.service import ProfileView


class ProfileOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    birth_date: date | None
    created_at: datetime
    last_active_at: datetime

    @classmethod
    def of(cls, view: ProfileView) -> ProfileOut:
        return cls(**view.__dict__)


class DeviceOut(BaseModel):
    id: uuid.UUID
    kind: str
    zone: str | None
    label: str
    created_at: datetime
    revoked: bool

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            id=device.id,
            kind=device.kind,
            zone=device.zone,
            label=device.label,
            created_at=device.created_at,
            revoked=device.revoked_at is not None,
        )


class MeOut(BaseModel):
    account_id: uuid.UUID
    household_id: uuid.UUID
    profile_id: uuid.UUID
    role: str
    email: str
