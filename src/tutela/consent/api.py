"""Routes of consent (C3-C6): the purposes asked for, a profile's consent, its history,
a change, and refusing everything. Thin: parse, call `consent.service`, answer."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks
from pydantic import BaseModel, Field

from tutela.consent import notice, service
from tutela.consent.ledger import ConsentLedger, Decision
from tutela.consent.models import Channel
from tutela.deps import AppContainer, CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["consent"])


class PurposeOut(BaseModel):
    name: str
    title: str
    description: str
    adult_default: bool
    changed_in: int
    separate: bool


class PurposesOut(BaseModel):
    notice_version: int
    purposes: list[PurposeOut]


class DecisionOut(BaseModel):
    purpose: str
    title: str
    allowed: bool
    reason: str
    """granted, default_on, not_granted, withdrawn, fresh_consent_needed,
    parental_consent_required."""
    since: datetime | None
    notice_version: int | None


class ConsentOut(BaseModel):
    profile_id: uuid.UUID
    notice_version: int
    purposes: list[DecisionOut]


class ConsentIn(BaseModel):
    notice_version: int = Field(ge=1, description="The notice version the person was shown.")
    changes: dict[str, bool] = Field(min_length=1, max_length=20)


class EventOut(BaseModel):
    id: uuid.UUID
    purpose: str
    granted: bool
    at: datetime
    by_you: bool
    channel: str
    method: str
    notice_version: int


def _out(ledger: ConsentLedger, profile_id: uuid.UUID, state: dict[str, Decision]) -> ConsentOut:
    return ConsentOut(
        profile_id=profile_id,
        notice_version=ledger.catalogue.notice_version,
        purposes=[
            DecisionOut(
                purpose=name,
                title=ledger.catalogue[name].title,
                allowed=d.allowed,
                reason=d.reason.value,
                since=d.since,
                notice_version=d.notice_version,
            )
            for name, d in state.items()
        ],
    )


@router.get("/consent/purposes", response_model=PurposesOut)
def purposes(container: AppContainer) -> PurposesOut:
    """What consent is asked for, under which notice version (public, C3, C4)."""
    catalogue = container.consent.catalogue
    return PurposesOut(
        notice_version=catalogue.notice_version,
        purposes=[PurposeOut(**p.__dict__) for p in catalogue.purposes.values()],
    )


@router.get("/profiles/{profile_id}/consent", response_model=ConsentOut)
def consent_of(
    profile_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> ConsentOut:
    who = service.whose(session, principal, profile_id)
    state = container.consent.state(session, who.subject, container.clock.now())
    return _out(container.consent, profile_id, state)


@router.post("/profiles/{profile_id}/consent", response_model=ConsentOut)
def change_consent(
    profile_id: uuid.UUID,
    payload: ConsentIn,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> ConsentOut:
    """Grant or withdraw purposes. A withdrawal counts from the next check on, in every
    process; a grant needs the current notice version, and for a child a guardian's
    verified consent (C3); sharing with other companies is asked for alone (C4). Each
    guardian of a child is told, an adult is sent a confirmation (C6). Turning on human
    review, training, sharing (any purpose off by default) needs a recent step-up (C7:
    403 `step_up_required`, nothing recorded); withdrawals never do."""
    state = service.change(
        session,
        container.consent,
        principal,
        profile_id,
        payload.changes,
        notice_version=payload.notice_version,
        channel=Channel.API,
        now=container.clock.now(),
        keys=container.vault.keys,
        origin=container.settings.origin,
        gate=container.gate,
    )
    background.add_task(container.deliver_notices)
    return _out(container.consent, profile_id, state)


@router.post("/profiles/{profile_id}/consent/refuse", response_model=ConsentOut)
def refuse_collection(
    profile_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> ConsentOut:
    """Refuse further collection and use (C6): every purpose withdrawn; the profile's
    devices' uploads for it are refused from now on. Data already held stays until it is
    deleted (a separate request)."""
    state = service.refuse(
        session,
        container.consent,
        principal,
        profile_id,
        channel=Channel.API,
        now=container.clock.now(),
        keys=container.vault.keys,
        origin=container.settings.origin,
    )
    background.add_task(container.deliver_notices)
    return _out(container.consent, profile_id, state)


@router.get("/profiles/{profile_id}/consent/history", response_model=list[EventOut])
def consent_history(
    profile_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> list[EventOut]:
    who = service.whose(session, principal, profile_id)
    mine = service.actor_of(principal)
    return [
        EventOut(
            id=e.id,
            purpose=e.purpose,
            granted=e.granted,
            at=e.at,
            by_you=e.actor == mine,
            channel=e.channel,
            method=e.method,
            notice_version=e.notice_version,
        )
        for e in container.consent.history(session, who.subject)
    ]


@router.get("/notices/consent")
def consent_notice(container: AppContainer) -> dict[str, object]:
    """The consent notice, generated from the purposes file the ledger runs on (public,
    C3); `/notices/consent` is the same notice as a page."""
    return notice.as_json(container.consent.catalogue)
