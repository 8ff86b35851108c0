"""Routes of the identity part: API tokens for sign-in and sign-out."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from tutela.deps import AppContainer, CurrentPrincipal, DbSession, client_address
from tutela.identity import service
from tutela.identity.models import SessionKind

router = APIRouter(prefix="/api/v1/auth", tags=["identity"])


class SignInIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105 (RFC 6750 token type)
    expires_at: datetime


@router.post("/token", response_model=TokenOut, status_code=201)
def sign_in(
    payload: SignInIn, request: Request, session: DbSession, container: AppContainer
) -> TokenOut:
    issued = service.sign_in(
        session,
        container.vault.keys,
        container.hasher,
        email=payload.email,
        password=payload.password,
        kind=SessionKind.API,
        ttl=timedelta(hours=container.settings.api_token_ttl_hours),
        user_agent=request.headers.get("user-agent", ""),
        address=client_address(request),
        now=container.clock.now(),
    )
    return TokenOut(token=issued.token, expires_at=issued.expires_at)


@router.delete("/token", status_code=204)
def sign_out(principal: CurrentPrincipal, session: DbSession, container: AppContainer) -> Response:
    service.sign_out(session, principal=principal, now=container.clock.now())
    return Response(status_code=204)
