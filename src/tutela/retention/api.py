"""Routes of retention: a profile's retention, its automatic deletion, and keeping an
inactive child's profile (A1-A3, A6, C9)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from tutela.deps import AppContainer, CurrentPrincipal, DbSession
from tutela.households.models import Profile
from tutela.identity.service import Principal
from tutela.retention import service
from tutela.vault.models import ItemKind

router = APIRouter(prefix="/api/v1", tags=["retention"])


class KindRetentionOut(BaseModel):
    kind: str
    policy_max_age_days: int
    choice: str | None
    effective_max_age_days: int | None
    """Days an item of this kind is kept; null would mean never (no choice gives that)."""
    decided_by: str
    """"policy" or "choice"."""


class InactiveChildOut(BaseModel):
    status: str
    """pending, kept, reactivated or erasing."""
    identified_at: datetime
    last_active_at: datetime
    erase_after: datetime
    notified_at: datetime | None
    decided_at: datetime | None
    kept_by: str | None
    kept_how: str | None

    @classmethod
    def of(cls, status: service.InactiveStatus) -> InactiveChildOut:
        return cls(
            status=status.outcome,
            identified_at=status.identified_at,
            last_active_at=status.last_active_at,
            erase_after=status.erase_after,
            notified_at=status.notified_at,
            decided_at=status.decided_at,
            kept_by=status.kept_by,
            kept_how=status.kept_how,
        )


class RetentionOut(BaseModel):
    profile_id: uuid.UUID
    profile_kind: str
    choices_offered: list[str]
    kinds: list[KindRetentionOut]
    inactive_child: InactiveChildOut | None

    @classmethod
    def of(cls, view: service.RetentionView) -> RetentionOut:
        return cls(
            profile_id=view.profile_id,
            profile_kind=view.profile_kind.value,
            choices_offered=list(view.choices_offered),
            kinds=[
                KindRetentionOut(
                    kind=k.kind.value,
                    policy_max_age_days=_days(k.policy_max_age),
                    choice=k.choice,
                    effective_max_age_days=_days(k.effective_max_age),
                    decided_by=k.decided_by,
                )
                for k in view.kinds
            ],
            inactive_child=(
                InactiveChildOut.of(view.inactive_child) if view.inactive_child else None
            ),
        )


class AutoDeleteIn(BaseModel):
    kind: ItemKind
    choice: str = Field(max_length=8, description='"3m", "18m" or "never" (adults only).')


def _days(age: timedelta) -> int:
    return age.days


def _profile(session: DbSession, principal: Principal, profile_id: uuid.UUID) -> Profile:
    return service.manageable_profile(
        session,
        household_id=principal.household_id,
        profile_id=profile_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
        role=principal.role,
    )


@router.get("/profiles/{profile_id}/retention", response_model=RetentionOut)
def get_retention(
    profile_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> RetentionOut:
    """Per kind: the policy's maximum age, the choice made and what applies (A6, C9); and
    the inactive-child rule's latest record for the profile (A1-A3)."""
    profile = _profile(session, principal, profile_id)
    return RetentionOut.of(service.retention_view(session, container.policy, profile=profile))


@router.put("/profiles/{profile_id}/auto-delete", response_model=RetentionOut)
def set_auto_delete(
    profile_id: uuid.UUID,
    payload: AutoDeleteIn,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
) -> RetentionOut:
    """Delete this profile's items of one kind automatically after 3 or 18 months, or
    "never" beyond the policy's maximum age (adults only: 422 `child_never_not_allowed`)."""
    _profile(session, principal, profile_id)
    service.set_auto_delete(
        session,
        household_id=principal.household_id,
        profile_id=profile_id,
        kind=payload.kind,
        choice=payload.choice,
        actor=f"account:{principal.account_id}",
        now=container.clock.now(),
    )
    profile = _profile(session, principal, profile_id)
    return RetentionOut.of(service.retention_view(session, container.policy, profile=profile))


@router.post("/profiles/{profile_id}/keep", response_model=InactiveChildOut)
def keep_profile(
    profile_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> InactiveChildOut:
    """A guardian keeps an inactive child's profile from erasure (A3); 409
    `no_pending_inactivity` when it is not awaiting erasure."""
    status = service.keep_inactive_child(
        session,
        household_id=principal.household_id,
        profile_id=profile_id,
        guardian_account_id=principal.account_id,
        how="api",
        now=container.clock.now(),
    )
    return InactiveChildOut.of(status)
