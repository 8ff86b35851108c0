"""The staff console: employees' sign-in, their home and their security page (R4).

Employees sign in here, never at the customers' `/login`. The password is the first step
only: every employee then presents a second factor, and those whose role reaches
customer content a passkey or security key (WebAuthn); an employee without the required
factor gets an enrolment session that can do nothing but add it (R4). The rules are the
identity part's staff `Gate` paths; these routes only turn their answers into pages.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import (
    InvalidCredentials,
    NotAuthenticated,
    ServiceUnavailable,
    TooManyAttempts,
)
from tutela.deps import (
    SESSION_COOKIE,
    AppContainer,
    DbSession,
    check_same_origin,
    client_of,
    cookie_name,
    signed_in,
)
from tutela.identity import service as identity
from tutela.identity.models import PasskeyAudience, SessionKind, SessionStage, SignInSession
from tutela.identity.service import StaffPrincipal
from tutela.identity.signin import SignInOutcome
from tutela.identity.staff import StaffRole, needs_webauthn
from tutela.settings import Settings
from tutela.web import account
from tutela.web.forms import (
    complete_factor,
    csrf_form_page,
    csrf_matches,
    passkey_sign_in,
    templates,
    with_retry_after,
)
from tutela.web.routes import set_session_cookies

router = APIRouter(prefix="/staff", include_in_schema=False)

LOGIN = "/staff/login"
HOME = "/staff"
SECURITY = "/staff/security"

ROLE_NAMES: dict[str, str] = {
    StaffRole.SUPPORT: "Support",
    StaffRole.REVIEWER: "Reviewer",
    StaffRole.PRIVACY_OFFICER: "Privacy officer",
    StaffRole.AUDITOR: "Auditor",
    StaffRole.SECURITY: "Security",
    StaffRole.ADMIN: "Administrator",
}


def _login_page(
    request: Request, settings: Settings, *, error: str | None = None, status: int = 200
) -> Response:
    return csrf_form_page(request, settings, "staff_login.html", status=status, error=error)


def staff_throttled_page(
    request: Request, settings: Settings, refused: TooManyAttempts
) -> Response:
    """The staff sign-in page saying how long to wait (429 with Retry-After), as the door."""
    return with_retry_after(
        _login_page(request, settings, error=refused.detail, status=429), refused
    )


def _factor_page(
    request: Request,
    *,
    challenge: str | None,
    factors: list[str],
    webauthn: str | None,
    error: str | None = None,
    status: int = 202,
) -> Response:
    return templates.TemplateResponse(
        request,
        "staff_login_factor.html",
        {"challenge": challenge, "factors": factors, "webauthn": webauthn, "error": error},
        status_code=status,
    )


def _landing(stage: str) -> str:
    return HOME if stage == SessionStage.FULL else SECURITY


def _outcome_page(request: Request, outcome: SignInOutcome, settings: Settings) -> Response:
    """A session (home, or the security page to enrol), or the second-factor form."""
    if outcome.issued is not None:
        response: Response = RedirectResponse(_landing(outcome.issued.stage), status_code=303)
        set_session_cookies(response, outcome, settings)
        return response
    return _factor_page(
        request,
        challenge=outcome.challenge,
        factors=outcome.factors,
        webauthn=outcome.webauthn_options,
    )


def _staff(request: Request, session: DbSession, container: AppContainer) -> StaffPrincipal:
    principal = signed_in(request, session, container)
    if not isinstance(principal, StaffPrincipal):
        raise NotAuthenticated("Sign in with an employee account.", code="staff_session_required")
    return principal


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, container: AppContainer) -> Response:
    return _login_page(request, container.settings)


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=100)],
) -> Response:
    """The password step of an employee's sign-in; a second factor always follows (R4)."""
    settings = container.settings
    if not csrf_matches(request, settings, csrf):
        return _login_page(
            request, settings, error="Your sign-in form expired; please try again.", status=400
        )
    background.add_task(container.deliver_notices)
    try:
        outcome = container.gate.sign_in(
            session,
            email=email,
            password=password,
            kind=SessionKind.COOKIE,
            client=client_of(request, settings),
            now=container.clock.now(),
            staff=True,
        )
    except TooManyAttempts as exc:
        return staff_throttled_page(request, settings, exc)
    except ServiceUnavailable as exc:  # employees never sign in unchecked (S5)
        return _login_page(request, settings, error=exc.detail, status=503)
    except NotAuthenticated as exc:
        return _login_page(request, settings, error=exc.detail, status=401)
    return _outcome_page(request, outcome, settings)


@router.post("/login/factor")
def login_factor(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    challenge: Annotated[str, Form(max_length=200)],
    code: Annotated[str, Form(max_length=40)] = "",
    webauthn: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    """The second step: an authenticator code, a recovery code or a WebAuthn assertion.
    Which of them an employee may use is the staff challenge's (WebAuthn only for roles
    that reach customer content, R4). Same-origin only (login CSRF)."""
    check_same_origin(request)
    try:
        outcome = complete_factor(
            request,
            session,
            container,
            background,
            challenge=challenge,
            code=code,
            webauthn=webauthn,
        )
    except InvalidCredentials:
        # The challenge stays usable for a few more tries; the form is drawn again
        # without the WebAuthn options (they were single-use): a code still works.
        return _factor_page(
            request,
            challenge=challenge,
            factors=[],
            webauthn=None,
            error="That did not confirm it is you. Try again, or sign in again.",
            status=401,
        )
    except NotAuthenticated as exc:
        return _login_page(request, container.settings, error=exc.detail, status=401)
    if outcome.issued is not None and not _issued_to_staff(session, outcome):
        # A customer's challenge replayed at the staff door: their own console, not ours.
        response: Response = RedirectResponse("/", status_code=303)
        set_session_cookies(response, outcome, container.settings)
        return response
    return _outcome_page(request, outcome, container.settings)


@router.post("/login/passkey")
def login_passkey(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    credential: Annotated[str, Form(max_length=20_000)],
) -> Response:
    """An employee's usernameless passkey sign-in (R4: phishing-resistant, both factors).
    Only an employee's passkey answers a staff ceremony. Same-origin only (login CSRF)."""
    check_same_origin(request)
    try:
        outcome = passkey_sign_in(
            request,
            session,
            container,
            background,
            credential=credential,
            audience=PasskeyAudience.STAFF,
        )
    except TooManyAttempts as exc:
        return _login_page(request, container.settings, error=exc.detail, status=429)
    except NotAuthenticated as exc:
        return _login_page(request, container.settings, error=exc.detail, status=401)
    return _outcome_page(request, outcome, container.settings)


def _issued_to_staff(session: DbSession, outcome: SignInOutcome) -> bool:
    assert outcome.issued is not None
    row = session.get(SignInSession, outcome.issued.session_id)
    return row is not None and row.staff_id is not None


@router.post("/logout")
def logout(request: Request, session: DbSession, container: AppContainer) -> Response:
    """End this employee session. Same-origin only: a cross-site form must not sign an
    employee out (or in) behind their back."""
    check_same_origin(request)
    with contextlib.suppress(NotAuthenticated):
        identity.sign_out(
            session, principal=signed_in(request, session, container), now=container.clock.now()
        )
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(
        cookie_name(SESSION_COOKIE, container.settings),
        secure=container.settings.cookie_secure,
        httponly=True,
    )
    return response


@router.get("", response_class=HTMLResponse)
def home(request: Request, session: DbSession, container: AppContainer) -> Response:
    """An employee's home: for now their security page and what is coming."""
    try:
        principal = _staff(request, session, container)
    except NotAuthenticated:
        return RedirectResponse(LOGIN, status_code=303)
    if principal.stage != SessionStage.FULL:  # enrol a factor or change the password first
        return RedirectResponse(SECURITY, status_code=303)
    login = container.gate.login_of(session, principal.owner)
    roles = sorted(login.roles)
    return templates.TemplateResponse(
        request,
        "staff_home.html",
        {
            "principal": principal,
            "roles": [ROLE_NAMES.get(role, role) for role in roles],
            "webauthn_required": needs_webauthn(login.roles),
        },
    )


@router.get("/security", response_class=HTMLResponse)
def security(request: Request, session: DbSession, container: AppContainer) -> Response:
    """Enrol and list factors, recovery codes, password and sessions, as customers do;
    the actions are the console's `/account/...` ones, which answer in this page."""
    try:
        _staff(request, session, container)
    except NotAuthenticated:
        return RedirectResponse(LOGIN, status_code=303)
    return account.security(request, session, container)
