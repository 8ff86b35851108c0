"""Routes of the households part: who I am, my profiles, my household's devices."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from tutela.deps import AppContainer, CurrentPrincipal, CurrentReader, DbSession
from tutela.households import service
from tutela.households.models import Account
from tutela.households.schemas import (
    DeviceIn,
    DeviceOut,
    MeOut,
    ProfileOut,
    RegisteredDeviceOut,
)

router = APIRouter(prefix="/api/v1", tags=["households"])


@router.get("/me", response_model=MeOut)
def me(principal: CurrentPrincipal, session: DbSession, container: AppContainer) -> MeOut:
    account = session.get(Account, (principal.household_id, principal.account_id))
    assert account is not None
    return MeOut(
        account_id=principal.account_id,
        household_id=principal.household_id,
        profile_id=principal.profile_id,
        role=principal.role,
        email=service.account_email(container.vault.keys, account),
    )


@router.get("/profiles", response_model=list[ProfileOut])
def profiles(
    reader: CurrentReader, session: DbSession, container: AppContainer
) -> list[ProfileOut]:
    views = service.list_profiles(
        session,
        container.vault.keys,
        household_id=reader.household_id,
        profile_ids=set(reader.profile_ids),
    )
    return [ProfileOut.of(v) for v in views]


@router.get("/devices", response_model=list[DeviceOut])
def devices(principal: CurrentPrincipal, session: DbSession) -> list[DeviceOut]:
    return [
        DeviceOut.of(d) for d in service.list_devices(session, household_id=principal.household_id)
    ]


@router.post("/devices", response_model=RegisteredDeviceOut, status_code=201)
def register_device(
    payload: DeviceIn, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> RegisteredDeviceOut:
    """Register a device of the household (owner only); its token is shown this once."""
    device, token = service.register_device(
        session,
        household_id=principal.household_id,
        spec=service.DeviceSpec(kind=payload.kind, label=payload.label, zone=payload.zone),
        now=container.clock.now(),
        actor=f"account:{principal.account_id}",
        actor_role=principal.role,
        camera_needs_factor=container.settings.mfa_required_for_camera_viewers,
    )
    return RegisteredDeviceOut(device=DeviceOut.of(device), token=token)


@router.delete("/devices/{device_id}", status_code=204)
def revoke_device(
    device_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> Response:
    """Revoke a device's token (owner only); its uploads are refused from now on."""
    service.revoke_device(
        session,
        household_id=principal.household_id,
        device_id=device_id,
        now=container.clock.now(),
        actor=f"account:{principal.account_id}",
        actor_role=principal.role,
    )
    return Response(status_code=204)
