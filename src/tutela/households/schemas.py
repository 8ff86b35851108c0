"""API shapes of the households part."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

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


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=16)
    label: str = Field(min_length=1, max_length=80)
    zone: str | None = Field(default=None, max_length=16)


class RegisteredDeviceOut(BaseModel):
    device: DeviceOut
    token: str = Field(description="Shown this once; Tutela keeps only its hash.")


class MeOut(BaseModel):
    account_id: uuid.UUID
    household_id: uuid.UUID
    profile_id: uuid.UUID
    role: str
    email: str
