"""Routes of usernameless passkey sign-in for customers and employees (R4, R5, S2, S4)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tutela.deps import AppContainer, DbSession, client_of
from tutela.identity.api import TokenOut, outcome_response
from tutela.identity.models import PasskeyAudience, SessionKind

router = APIRouter(prefix="/api/v1", tags=["identity"])

NO_STORE = {"cache-control": "no-store"}


class PasskeyOptionsOut(BaseModel):
    options: dict[str, Any]


class PasskeyIn(BaseModel):
    # The browser's `PublicKeyCredential` as JSON; its size is bounded by the server's
    # request limits and py_webauthn parses it field by field.
    credential: dict[str, Any]


def _options(
    session: DbSession, container: AppContainer, audience: PasskeyAudience
) -> JSONResponse:
    options = container.gate.passkey_options(session, audience=audience, now=container.clock.now())
    return JSONResponse({"options": json.loads(options)}, headers=NO_STORE)


def _sign_in(
    payload: PasskeyIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    audience: PasskeyAudience,
) -> JSONResponse:
    background.add_task(container.deliver_notices)
    outcome = container.gate.passkey_sign_in(
        session,
        assertion=payload.credential,
        audience=audience,
        kind=SessionKind.API,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    return outcome_response(outcome)


@router.post("/auth/passkey/options", response_model=PasskeyOptionsOut)
def passkey_options(session: DbSession, container: AppContainer) -> JSONResponse:
    """Options for `navigator.credentials.get()` with no username: any passkey may answer."""
    return _options(session, container, PasskeyAudience.ACCOUNT)


@router.post("/auth/passkey", status_code=201, response_model=TokenOut)
def passkey_sign_in(
    payload: PasskeyIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Sign in with a passkey alone: 201 with a token. A passkey that verified its user is
    both factors; `passkey_invalid` (401) is the one answer for any assertion that fails."""
    return _sign_in(payload, request, session, container, background, PasskeyAudience.ACCOUNT)


@router.post("/staff/auth/passkey/options", response_model=PasskeyOptionsOut)
def staff_passkey_options(session: DbSession, container: AppContainer) -> JSONResponse:
    """An employee's usernameless ceremony; only employees' passkeys can answer it."""
    return _options(session, container, PasskeyAudience.STAFF)


@router.post("/staff/auth/passkey", status_code=201, response_model=TokenOut)
def staff_passkey_sign_in(
    payload: PasskeyIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """An employee's passkey sign-in: phishing-resistant and multi-factor (R4)."""
    return _sign_in(payload, request, session, container, background, PasskeyAudience.STAFF)
