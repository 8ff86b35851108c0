"""Routes of the identity part: sign-in (password, second factor, emailed link), step-up,
sessions, password change and factors (R4-R7, S1-S5, C7)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tutela.audit.service import AuditTag
from tutela.core.errors import Conflict, Forbidden
from tutela.deps import (
    DEVICE_COOKIE,
    AnySignedIn,
    AppContainer,
    DbSession,
    client_of,
    cookie_name,
)
from tutela.identity import factors
from tutela.identity import service as sessions
from tutela.identity.key_uri import qr_svg
from tutela.identity.models import FactorKind, SessionKind, SessionStage
from tutela.identity.owners import email_of, record_by
from tutela.identity.signin import SignInOutcome
from tutela.identity.staff import needs_webauthn
from tutela.notices.service import NoticeKind, enqueue

router = APIRouter(prefix="/api/v1", tags=["identity"])


class SignInIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class SignUpIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class FactorIn(BaseModel):
    challenge: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, max_length=12)
    recovery_code: str | None = Field(default=None, max_length=40)
    webauthn: dict[str, Any] | None = None


class LinkIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class StepUpIn(BaseModel):
    password: str | None = Field(default=None, max_length=1024)
    code: str | None = Field(default=None, max_length=12)
    recovery_code: str | None = Field(default=None, max_length=40)
    webauthn: dict[str, Any] | None = None
    ceremony: str | None = Field(default=None, max_length=200)


class PasswordIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    status: str = "signed_in"
    token: str
    token_type: str = "bearer"  # noqa: S105 (RFC 6750 token type)
    expires_at: datetime
    stage: str
    device_token: str | None = None


class SessionOut(BaseModel):
    id: uuid.UUID
    kind: str
    created_at: datetime
    last_seen_at: datetime
    address: str
    user_agent: str
    current: bool


class FactorOut(BaseModel):
    id: uuid.UUID
    kind: str
    label: str
    created_at: datetime
    last_used_at: datetime | None


class TotpIn(BaseModel):
    label: str = Field(default="Authenticator app", min_length=1, max_length=64)


class TotpOut(BaseModel):
    factor_id: uuid.UUID
    secret: str
    uri: str
    # The URI as an inline SVG QR code (segno's drawing only; safe to embed).
    qr_svg: str


class CodeIn(BaseModel):
    code: str = Field(min_length=6, max_length=12)


class WebAuthnIn(BaseModel):
    ceremony: str = Field(min_length=1, max_length=200)
    credential: dict[str, Any]
    # Without one: "Passkey" or "Security key", as the ceremony was.
    label: str | None = Field(default=None, min_length=1, max_length=64)


class WebAuthnOptionsIn(BaseModel):
    # A passkey signs in on its own (discoverable, user-verifying); a security key is a
    # second factor after the password.
    kind: Literal["security_key", "passkey"] = "security_key"


class CeremonyOut(BaseModel):
    ceremony: str
    options: dict[str, Any]


class CodesOut(BaseModel):
    codes: list[str]


class SecurityOut(BaseModel):
    stage: str
    mfa_required: bool
    webauthn_required: bool
    factors: list[FactorOut]
    recovery_codes_left: int


def outcome_response(outcome: SignInOutcome) -> JSONResponse:
    """201 with a token, or 202 with what must follow."""
    if outcome.issued is not None:
        token = TokenOut(
            token=outcome.issued.token,
            expires_at=outcome.issued.expires_at,
            stage=outcome.issued.stage,
            device_token=outcome.device_token,
        ).model_dump(mode="json")
        return JSONResponse(token, status_code=201, headers={"cache-control": "no-store"})
    body: dict[str, Any] = {"status": outcome.status}
    if outcome.challenge is not None:
        body["challenge"] = outcome.challenge
        body["factors"] = outcome.factors
        if outcome.webauthn_options is not None:
            body["webauthn"] = json.loads(outcome.webauthn_options)
    return JSONResponse(body, status_code=202, headers={"cache-control": "no-store"})


def _sign_in(
    payload: SignInIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    *,
    staff: bool,
) -> JSONResponse:
    outcome = container.gate.sign_in(
        session,
        email=payload.email,
        password=payload.password,
        kind=SessionKind.API,
        client=client_of(request, container.settings),
        now=container.clock.now(),
        staff=staff,
    )
    background.add_task(container.deliver_notices)
    return outcome_response(outcome)


@router.post("/auth/token", status_code=201, response_model=TokenOut)
def sign_in(
    payload: SignInIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Sign in with email and password: 201 with a token, or 202 when a second factor
    (`second_factor_required`) or the emailed link (`link_sent`) must follow."""
    return _sign_in(payload, request, session, container, background, staff=False)


@router.post("/signup", status_code=202)
def sign_up(
    payload: SignUpIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> dict[str, str]:
    """Open a household and its owner's account. A weak password is refused with the
    reason (422, S1, R7); otherwise the answer is the same whether or not the address
    already had an account (its holder gets a notice). The new account's first session
    comes from the link emailed to it (`POST /auth/token/link`): the mailbox is proven
    first."""
    container.gate.sign_up(
        session,
        name=payload.name,
        email=payload.email,
        password=payload.password,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    background.add_task(container.deliver_notices)
    return {
        "status": "accepted",
        "detail": "If the address can be used, we sent it a link that opens the account.",
    }


@router.post("/staff/auth/token", status_code=201, response_model=TokenOut)
def staff_sign_in(
    payload: SignInIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """An employee's sign-in: a second factor always follows (R4)."""
    return _sign_in(payload, request, session, container, background, staff=True)


@router.post("/auth/token/factor", status_code=201, response_model=TokenOut)
def sign_in_factor(
    payload: FactorIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """The second step: a TOTP code, a recovery code or a WebAuthn assertion."""
    background.add_task(container.deliver_notices)
    outcome = container.gate.complete_factor(
        session,
        challenge=payload.challenge,
        code=payload.code,
        recovery_code=payload.recovery_code,
        webauthn=payload.webauthn,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    return outcome_response(outcome)


@router.post("/auth/token/link", status_code=201, response_model=TokenOut)
def sign_in_link(
    payload: LinkIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Complete a sign-in with the token of the emailed one-time link."""
    outcome = container.gate.complete_link(
        session,
        token=payload.token,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    background.add_task(container.deliver_notices)
    return outcome_response(outcome)


@router.delete("/auth/token", status_code=204)
def sign_out(
    principal: AnySignedIn,
    request: Request,
    session: DbSession,
    container: AppContainer,
    forget_device: bool = False,
) -> Response:
    """End this session. `forget_device=true` ("this is a shared computer") also forgets
    the known device whose token comes with the request (`X-Tutela-Device` or cookie)."""
    device = client_of(request, container.settings).device_token if forget_device else None
    sessions.sign_out(session, principal=principal, now=container.clock.now(), forget_device=device)
    response = Response(status_code=204)
    if forget_device:
        response.delete_cookie(
            cookie_name(DEVICE_COOKIE, container.settings),
            secure=container.settings.cookie_secure,
            httponly=True,
            samesite="strict",
        )
    return response


@router.post("/auth/step-up/options", response_model=CeremonyOut | None)
def step_up_options(
    principal: AnySignedIn, session: DbSession, container: AppContainer
) -> CeremonyOut | Response:
    """A WebAuthn challenge for step-up (204 when the owner has no WebAuthn credential)."""
    made = container.gate.step_up_options(session, principal=principal, now=container.clock.now())
    if made is None:
        return Response(status_code=204)
    return CeremonyOut(ceremony=made[0], options=json.loads(made[1]))


@router.post("/auth/step-up", status_code=204)
def step_up(
    payload: StepUpIn,
    request: Request,
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
) -> Response:
    """Confirm it is you: a fresh second factor, or the password without one (C7)."""
    container.gate.step_up(
        session,
        principal=principal,
        password=payload.password,
        code=payload.code,
        recovery_code=payload.recovery_code,
        webauthn=payload.webauthn,
        webauthn_token=payload.ceremony,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    return Response(status_code=204)


@router.get("/sessions", response_model=list[SessionOut])
def list_sessions(
    principal: AnySignedIn, session: DbSession, container: AppContainer
) -> list[SessionOut]:
    """The active sessions: device, address, last seen (S4)."""
    return [
        SessionOut(**vars(v))
        for v in sessions.list_sessions(
            session, container.vault.keys, principal=principal, now=container.clock.now()
        )
    ]


def not_enrolling(principal: AnySignedIn) -> None:
    """A session that has not yet added the required factor cannot end other sessions."""
    if principal.stage == SessionStage.ENROL:
        raise Forbidden("Add a second factor first.", code="mfa_enrolment_required")


@router.delete("/sessions/{session_id}", status_code=204)
def end_session(
    session_id: uuid.UUID, principal: AnySignedIn, session: DbSession, container: AppContainer
) -> Response:
    not_enrolling(principal)
    sessions.end_session(
        session, principal=principal, session_id=session_id, now=container.clock.now()
    )
    return Response(status_code=204)


@router.post("/sessions/end-others")
def end_other_sessions(
    principal: AnySignedIn, session: DbSession, container: AppContainer
) -> dict[str, int]:
    not_enrolling(principal)
    ended = sessions.end_all(
        session, owner=principal.owner, now=container.clock.now(), keep=principal.session_id
    )
    session.commit()
    return {"ended": ended}


@router.post("/account/password", status_code=201, response_model=TokenOut)
def change_password(
    payload: PasswordIn,
    request: Request,
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> JSONResponse:
    """A new password (S1). Every session ends; the answer carries a fresh token."""
    issued = container.gate.change_password(
        session,
        principal=principal,
        current_password=payload.current_password,
        new_password=payload.new_password,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    background.add_task(container.deliver_notices)
    return outcome_response(SignInOutcome(status="signed_in", issued=issued))


def _factor_out(f: Any) -> FactorOut:
    return FactorOut(
        id=f.id, kind=f.kind, label=f.label, created_at=f.created_at, last_used_at=f.last_used_at
    )


@router.get("/account/security", response_model=SecurityOut)
def security(principal: AnySignedIn, session: DbSession, container: AppContainer) -> SecurityOut:
    """What protects this account: factors, recovery codes, and what is required."""
    login = container.gate.login_of(session, principal.owner)
    return SecurityOut(
        stage=principal.stage,
        mfa_required=container.gate._mfa_required(session, login),
        webauthn_required=login.staff is not None and needs_webauthn(login.roles),
        factors=[_factor_out(f) for f in factors.list_factors(session, principal.owner)],
        recovery_codes_left=factors.recovery_codes_left(session, principal.owner),
    )


@router.get("/factors", response_model=list[FactorOut])
def list_factors(principal: AnySignedIn, session: DbSession) -> list[FactorOut]:
    return [_factor_out(f) for f in factors.list_factors(session, principal.owner)]


def changing_factors(session: DbSession, container: AppContainer, principal: AnySignedIn) -> None:
    """Adding or removing factors needs step-up, except while enrolling the first one
    (judged from the account as it is now, not from when the session opened)."""
    if principal.stage == SessionStage.ENROL:
        if container.gate.current_stage(session, principal) == SessionStage.ENROL:
            return
        raise Forbidden("Sign in again with your second factor.", code="session_stale")
    if principal.stage != SessionStage.FULL:
        raise Forbidden("Change your password first.", code="password_change_required")
    container.gate.require_step_up(session, principal, now=container.clock.now())


def _factor_added(
    session: DbSession,
    container: AppContainer,
    principal: AnySignedIn,
    factor: Any,
    background: BackgroundTasks,
) -> None:
    now = container.clock.now()
    owner = principal.owner
    record_by(session, owner, AuditTag.FACTOR_ADDED, now=now, subject=f"factor:{factor.id}")
    enqueue(
        session,
        container.vault.keys,
        kind=NoticeKind.FACTOR_ADDED,
        owner=owner,
        params={"at": now.isoformat(), "factor": f"{factor.kind}: {factor.label}"},
        now=now,
    )
    if principal.stage == SessionStage.ENROL:
        container.gate.refresh_stage(session, principal, now=now)
    session.commit()
    background.add_task(container.deliver_notices)


@router.post("/factors/totp", status_code=201, response_model=TotpOut)
def begin_totp(
    payload: TotpIn, principal: AnySignedIn, session: DbSession, container: AppContainer
) -> TotpOut:
    """Start adding an authenticator app: scan the URI, then confirm with a code."""
    changing_factors(session, container, principal)
    login = container.gate.login_of(session, principal.owner)
    now = container.clock.now()
    enrolment = factors.begin_totp(
        session,
        container.vault.keys,
        principal.owner,
        label=payload.label,
        account_name=email_of(session, container.vault.keys, login.owner, now=now),
        now=now,
    )
    session.commit()
    return TotpOut(
        factor_id=enrolment.factor_id,
        secret=enrolment.secret,
        uri=enrolment.provisioning_uri,
        qr_svg=qr_svg(enrolment.provisioning_uri),
    )


@router.post("/factors/totp/{factor_id}/confirm", response_model=FactorOut)
def confirm_totp(
    factor_id: uuid.UUID,
    payload: CodeIn,
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> FactorOut:
    changing_factors(session, container, principal)
    factor = factors.confirm_totp(
        session,
        container.vault.keys,
        principal.owner,
        factor_id,
        payload.code,
        now=container.clock.now(),
    )
    _factor_added(session, container, principal, factor, background)
    return _factor_out(factor)


@router.post("/factors/webauthn/options", response_model=CeremonyOut)
def webauthn_options(
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    payload: WebAuthnOptionsIn | None = None,
) -> CeremonyOut:
    """Options for `navigator.credentials.create()`: a security key (the default), or a
    passkey (`{"kind": "passkey"}`: resident key and user verification required)."""
    changing_factors(session, container, principal)
    settings = container.settings
    now = container.clock.now()
    name = email_of(session, container.vault.keys, principal.owner, now=now)
    token, options = factors.registration_options(
        session,
        principal.owner,
        user_name=name,
        display_name=name,
        rp_id=settings.rp_id,
        rp_name=settings.webauthn_rp_name,
        passkey=payload is not None and payload.kind == "passkey",
        now=now,
        ttl=container.challenge_ttl,
    )
    session.commit()
    return CeremonyOut(ceremony=token, options=json.loads(options))


@router.post("/factors/webauthn", status_code=201, response_model=FactorOut)
def add_webauthn(
    payload: WebAuthnIn,
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> FactorOut:
    changing_factors(session, container, principal)
    factor = factors.finish_registration(
        session,
        principal.owner,
        token=payload.ceremony,
        credential=payload.credential,
        rp_id=container.settings.rp_id,
        origin=container.settings.origin,
        label=payload.label,
        now=container.clock.now(),
    )
    _factor_added(session, container, principal, factor, background)
    return _factor_out(factor)


@router.delete("/factors/{factor_id}", status_code=204)
def remove_factor(
    factor_id: uuid.UUID,
    principal: AnySignedIn,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> Response:
    """Remove a factor (step-up); the last one cannot go where MFA is mandatory."""
    changing_factors(session, container, principal)
    owner = principal.owner
    now = container.clock.now()
    factor = factors.remove_factor(session, owner, factor_id)
    container.gate.close_challenges(session, owner, now)
    login = container.gate.login_of(session, owner)
    if container.gate.stage_for(session, login, breached=False) == SessionStage.ENROL:
        session.rollback()
        raise Conflict(
            "This account must keep a second factor"
            + (" (a security key or passkey)." if factor.kind == FactorKind.WEBAUTHN else "."),
            code="factor_required",
        )
    record_by(session, owner, AuditTag.FACTOR_REMOVED, now=now, subject=f"factor:{factor.id}")
    enqueue(
        session,
        container.vault.keys,
        kind=NoticeKind.FACTOR_REMOVED,
        owner=owner,
        params={"at": now.isoformat(), "factor": f"{factor.kind}: {factor.label}"},
        now=now,
    )
    session.commit()
    background.add_task(container.deliver_notices)
    return Response(status_code=204)


@router.post("/factors/recovery-codes", status_code=201, response_model=CodesOut)
def recovery_codes(principal: AnySignedIn, session: DbSession, container: AppContainer) -> CodesOut:
    """Ten single-use recovery codes, shown once; earlier ones stop working."""
    changing_factors(session, container, principal)
    owner = principal.owner
    now = container.clock.now()
    if not factors.has_second_factor(session, owner):
        raise Conflict("Add a second factor first.", code="factor_required")
    codes = factors.new_recovery_codes(session, container.vault.keys, owner, now=now)
    record_by(session, owner, AuditTag.RECOVERY_CODES_ISSUED, now=now)
    session.commit()
    return CodesOut(codes=codes)
