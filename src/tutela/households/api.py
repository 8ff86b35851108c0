"""Routes of the households part: who I am, my profiles, my household's devices."""

from __future__ import annotations

from fastapi import APIRouter

from tutela.deps import AppContainer, CurrentPrincipal, CurrentReader, DbSession
from tutela.households import service
from tutela.households.models import Account
from tutela.households.schemas import DeviceOut, MeOut, ProfileOut

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
