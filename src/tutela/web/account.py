"""Console pages for sign-in security: factors, recovery codes, step-up, password, sessions.

Thin: every rule lives in `identity`; these routes turn its answers into pages (R5, R6, S4).
The same actions serve employees (R4), whose pages are `/staff/security` (web/staff.py):
each answer is drawn in the page of the kind of account that asked.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import NotAuthenticated, TutelaError
from tutela.deps import AppContainer, DbSession, client_of, signed_in
from tutela.identity import factors, password_rules
from tutela.identity import service as sessions
from tutela.identity.key_uri import grouped_key, qr_svg
from tutela.identity.models import SessionStage
from tutela.identity.owners import email_of
from tutela.identity.service import AnyPrincipal, StaffPrincipal
from tutela.identity.signin import SignInOutcome
from tutela.identity.staff import needs_webauthn
from tutela.web.forms import answer_step_up, templates
from tutela.web.routes import set_session_cookies

router = APIRouter(prefix="/account", include_in_schema=False)


def _page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: AnyPrincipal,
    *,
    status: int = 200,
    **extra: Any,
) -> Response:
    now = container.clock.now()
    login = container.gate.login_of(session, principal.owner)
    staff = isinstance(principal, StaffPrincipal)
    fresh = principal.stepped_up_at is not None and (
        (now - principal.stepped_up_at).total_seconds() < container.settings.step_up_minutes * 60
    )
    context = {
        "principal": principal,
        "factors": factors.list_factors(session, principal.owner),
        "recovery_left": factors.recovery_codes_left(session, principal.owner),
        "mfa_required": container.gate._mfa_required(session, login),
        "webauthn_required": staff and needs_webauthn(login.roles),
        "security_url": security_url(principal),
        "sessions": sessions.list_sessions(
            session, container.vault.keys, principal=principal, now=now
        ),
        "guidance": password_rules.GUIDANCE,
        "step_up_fresh": fresh,
        "recovery_pending": (
            None
            if principal.owner.is_staff
            else container.recovery.pending(session, owner=principal.owner)
        ),
        "message": None,
        "error": None,
        "totp": None,
        "codes": None,
        **extra,
    }
    template = "staff_security.html" if staff else "security.html"
    return templates.TemplateResponse(request, template, context, status_code=status)


def security_url(principal: AnyPrincipal) -> str:
    """The security page of the kind of account signed in."""
    return "/staff/security" if isinstance(principal, StaffPrincipal) else "/account/security"


def home_url(principal: AnyPrincipal, stage: str) -> str:
    """Where a session of `stage` lands: its console's home once it may do everything."""
    if stage != SessionStage.FULL:
        return security_url(principal)
    return "/staff" if isinstance(principal, StaffPrincipal) else "/"


def _principal(request: Request, session: DbSession, container: AppContainer) -> AnyPrincipal:
    return signed_in(request, session, container)


def _guarded(
    request: Request, session: DbSession, container: AppContainer, action: Any
) -> Response:
    """Run `action(principal)`; a refusal is shown on the page rather than as JSON."""
    try:
        principal = _principal(request, session, container)
    except NotAuthenticated:
        staff_page = request.url.path.startswith("/staff")
        return RedirectResponse("/staff/login" if staff_page else "/login", status_code=303)
    try:
        result: Response = action(principal)
    except TutelaError as exc:
        session.rollback()
        principal = _principal(request, session, container)
        return _page(request, session, container, principal, status=exc.status, error=exc.detail)
    return result


@router.get("/security", response_class=HTMLResponse)
def security(request: Request, session: DbSession, container: AppContainer) -> Response:
    return _guarded(request, session, container, lambda p: _page(request, session, container, p))


def _changing(session: DbSession, container: AppContainer, principal: AnyPrincipal) -> None:
    from tutela.identity.api import changing_factors  # noqa: PLC0415

    changing_factors(session, container, principal)


@router.post("/step-up")
def step_up(
    request: Request,
    session: DbSession,
    container: AppContainer,
    code: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        answer_step_up(request, session, container, principal, code=code, password=password)
        return RedirectResponse(security_url(principal), status_code=303)

    return _guarded(request, session, container, act)


@router.post("/totp")
def begin_totp(request: Request, session: DbSession, container: AppContainer) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        _changing(session, container, principal)
        now = container.clock.now()
        enrolment = factors.begin_totp(
            session,
            container.vault.keys,
            principal.owner,
            label="Authenticator app",
            account_name=email_of(session, container.vault.keys, principal.owner, now=now),
            now=now,
        )
        session.commit()
        return _page(
            request,
            session,
            container,
            principal,
            totp=enrolment,
            totp_qr=qr_svg(enrolment.provisioning_uri),
            totp_key=grouped_key(enrolment.secret),
        )

    return _guarded(request, session, container, act)


@router.post("/totp/{factor_id}/confirm")
def confirm_totp(
    factor_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    code: Annotated[str, Form(max_length=12)],
) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        _changing(session, container, principal)
        now = container.clock.now()
        factor = factors.confirm_totp(
            session, container.vault.keys, principal.owner, factor_id, code.strip(), now=now
        )
        from tutela.identity.api import _factor_added  # noqa: PLC0415

        _factor_added(session, container, principal, factor, background)
        codes = factors.new_recovery_codes(session, container.vault.keys, principal.owner, now=now)
        session.commit()
        fresh = _principal(request, session, container)
        return _page(
            request,
            session,
            container,
            fresh,
            codes=codes,
            message="Authenticator app added. Save your recovery codes.",
        )

    return _guarded(request, session, container, act)


@router.post("/factors/{factor_id}/remove")
def remove_factor(
    factor_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        from tutela.identity.api import remove_factor as api_remove  # noqa: PLC0415

        api_remove(factor_id, principal, session, container, background)
        return _page(request, session, container, principal, message="Factor removed.")

    return _guarded(request, session, container, act)


@router.post("/recovery-codes")
def recovery_codes(request: Request, session: DbSession, container: AppContainer) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        from tutela.identity.api import recovery_codes as api_codes  # noqa: PLC0415

        made = api_codes(principal, session, container)
        return _page(request, session, container, principal, codes=made.codes)

    return _guarded(request, session, container, act)


@router.post("/password")
def change_password(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    current_password: Annotated[str, Form(max_length=1024)],
    new_password: Annotated[str, Form(max_length=1024)],
) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        issued = container.gate.change_password(
            session,
            principal=principal,
            current_password=current_password,
            new_password=new_password,
            client=client_of(request, container.settings),
            now=container.clock.now(),
        )
        background.add_task(container.deliver_notices)
        response = RedirectResponse(home_url(principal, issued.stage), status_code=303)
        set_session_cookies(
            response, SignInOutcome(status="signed_in", issued=issued), container.settings
        )
        return response

    return _guarded(request, session, container, act)


@router.post("/sessions/{session_id}/end")
def end_session(
    session_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        from tutela.identity.api import not_enrolling  # noqa: PLC0415

        not_enrolling(principal)
        sessions.end_session(
            session, principal=principal, session_id=session_id, now=container.clock.now()
        )
        return _page(request, session, container, principal, message="Session ended.")

    return _guarded(request, session, container, act)


@router.post("/sessions/end-others")
def end_others(request: Request, session: DbSession, container: AppContainer) -> Response:
    def act(principal: AnyPrincipal) -> Response:
        from tutela.identity.api import not_enrolling  # noqa: PLC0415

        not_enrolling(principal)
        ended = sessions.end_all(
            session, owner=principal.owner, now=container.clock.now(), keep=principal.session_id
        )
        session.commit()
        return _page(
            request, session, container, principal, message=f"{ended} other session(s) ended."
        )

    return _guarded(request, session, container, act)
