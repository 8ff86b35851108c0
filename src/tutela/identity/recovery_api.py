"""Routes of account recovery ("forgot password"): request a link, open it, complete or
wait, cancel a waiting reset (R5, R6, S1, S2, S4). The rules are in `recovery`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tutela.deps import AnySignedIn, AppContainer, DbSession, client_of

router = APIRouter(prefix="/api/v1/auth/recovery", tags=["identity"])

ACCEPTED = {
    "status": "accepted",
    "detail": "If an account uses this address, we emailed it a link to reset its password.",
}
NO_STORE = {"cache-control": "no-store"}


class RecoveryIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)


class TokenIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class CompleteIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    new_password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(default=None, max_length=12)
    recovery_code: str | None = Field(default=None, max_length=40)
    webauthn: dict[str, Any] | None = None


class StartOut(BaseModel):
    status: str
    factor_required: bool
    factors: list[str]
    webauthn: dict[str, Any] | None = None
    delay_days: int
    delay_until: datetime | None = None


class PendingOut(BaseModel):
    pending: bool
    requested_at: datetime | None = None
    delay_until: datetime | None = None


@router.post("", status_code=202)
def request_recovery(
    payload: RecoveryIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Email a single-use recovery link. Always 202 with the same body: whether the address
    has an account is never revealed. Throttled like sign-in (429 with Retry-After)."""
    client, now = client_of(request, container.settings), container.clock.now()
    container.recovery.admit(session, email=payload.email, client=client, now=now)
    background.add_task(
        container.recovery.send_link_later,
        email=payload.email,
        client=client,
        now=now,
        deliver=container.deliver_notices,
    )
    return JSONResponse(ACCEPTED, status_code=202, headers=NO_STORE)


@router.post("/start", response_model=StartOut)
def start_recovery(payload: TokenIn, session: DbSession, container: AppContainer) -> StartOut:
    """What the link needs: a new password, and whether a second factor is asked
    (`factor_required`); `status` is `delayed` once a reset is waiting."""
    opened = container.recovery.start(session, token=payload.token, now=container.clock.now())
    return StartOut(
        status=opened.status,
        factor_required=opened.factor_required,
        factors=opened.factors,
        webauthn=json.loads(opened.webauthn_options) if opened.webauthn_options else None,
        delay_days=opened.delay_days,
        delay_until=opened.delay_until,
    )


@router.post("/complete")
def complete_recovery(
    payload: CompleteIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """200 `recovered`: the password changed, every session ended, every device forgotten.
    202 `delayed`: the account has a second factor and none was presented; the reset takes
    effect at `delay_until` unless its owner cancels it."""
    background.add_task(container.deliver_notices)
    outcome = container.recovery.complete(
        session,
        token=payload.token,
        new_password=payload.new_password,
        code=payload.code,
        recovery_code=payload.recovery_code,
        webauthn=payload.webauthn,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    body: dict[str, Any] = {"status": outcome.status}
    if outcome.delay_until is not None:
        body["delay_until"] = outcome.delay_until.isoformat()
    return JSONResponse(
        body, status_code=200 if outcome.status == "recovered" else 202, headers=NO_STORE
    )


@router.post("/cancel")
def cancel_recovery(
    payload: TokenIn, session: DbSession, container: AppContainer, background: BackgroundTasks
) -> dict[str, str]:
    """Cancel a waiting reset with the token of the link its notice carried."""
    container.recovery.cancel(session, token=payload.token, now=container.clock.now())
    background.add_task(container.deliver_notices)
    return {"status": "cancelled"}


@router.get("/pending", response_model=PendingOut)
def pending_recovery(
    principal: AnySignedIn, session: DbSession, container: AppContainer
) -> PendingOut:
    """The signed-in owner's waiting reset, if any."""
    found = (
        None
        if principal.owner.is_staff
        else container.recovery.pending(session, owner=principal.owner)
    )
    if found is None:
        return PendingOut(pending=False)
    return PendingOut(pending=True, requested_at=found.requested_at, delay_until=found.delay_until)


@router.delete("/pending", response_model=PendingOut)
def cancel_pending_recovery(
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> PendingOut:
    """Cancel the signed-in owner's waiting reset. Any live session may, whatever its
    stage: stopping a takeover must not wait for anything."""
    if not principal.owner.is_staff:
        container.recovery.cancel_pending(session, owner=principal.owner, now=container.clock.now())
    background.add_task(container.deliver_notices)
    return PendingOut(pending=False)
