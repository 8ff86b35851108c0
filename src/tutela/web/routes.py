"""Console routes: sign-in, the household, a profile's items with players. No business rules."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tutela.core.errors import (
    Forbidden,
    InvalidCredentials,
    NotAuthenticated,
    NotFound,
    TooManyAttempts,
)
from tutela.deps import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    AppContainer,
    DbSession,
    check_same_origin,
    client_of,
    cookie_name,
    current_principal,
    current_reader,
    signed_in,
)
from tutela.households import service as households
from tutela.identity import service as identity
from tutela.identity.models import PasskeyAudience, SessionKind, SessionStage
from tutela.identity.signin import SignInOutcome
from tutela.identity.staff_door import UseStaffSignIn
from tutela.retention.notice import format_hours
from tutela.settings import Settings
from tutela.vault import service as vault
from tutela.vault.models import ItemKind
from tutela.web import exports as console_exports
from tutela.web import rights_forms
from tutela.web.forms import (
    CSRF_COOKIE,
    complete_factor,
    csrf_form_page,
    csrf_matches,
    passkey_sign_in,
    templates,
    with_retry_after,
)

HERE = Path(__file__).parent
router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


def _login_page(
    request: Request,
    settings: Settings,
    *,
    error: str | None = None,
    status: int = 200,
    staff_door: bool = False,
) -> Response:
    return csrf_form_page(
        request, settings, "login.html", status=status, error=error, staff_door=staff_door
    )


def throttled_page(request: Request, settings: Settings, refused: TooManyAttempts) -> Response:
    """The sign-in page saying how long to wait (429 with Retry-After); the door sends it too."""
    return with_retry_after(
        _login_page(request, settings, error=refused.detail, status=429), refused
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, container: AppContainer) -> Response:
    return _login_page(request, container.settings)


def set_session_cookies(response: Response, outcome: SignInOutcome, settings: Settings) -> None:
    """The session cookie, and the long-lived known-device cookie (OWASP device cookies)."""
    assert outcome.issued is not None
    response.set_cookie(
        cookie_name(SESSION_COOKIE, settings),
        outcome.issued.token,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        max_age=settings.session_ttl_hours * 3600,
    )
    if outcome.device_token:
        response.set_cookie(
            cookie_name(DEVICE_COOKIE, settings),
            outcome.device_token,
            httponly=True,
            samesite="strict",
            secure=settings.cookie_secure,
            max_age=180 * 86400,
        )
    response.delete_cookie(
        cookie_name(CSRF_COOKIE, settings), secure=settings.cookie_secure, httponly=True
    )


def landing(stage: str) -> str:
    return "/" if stage == SessionStage.FULL else "/account/security"


def outcome_page(request: Request, outcome: SignInOutcome, settings: Settings) -> Response:
    """Where a sign-in step leads: the console, the second-factor form, or 'check your mail'."""
    if outcome.issued is not None:
        response: Response = RedirectResponse(landing(outcome.issued.stage), status_code=303)
        set_session_cookies(response, outcome, settings)
        return response
    if outcome.status == "link_sent":
        return templates.TemplateResponse(request, "login_link_sent.html", {}, status_code=202)
    return templates.TemplateResponse(
        request,
        "login_factor.html",
        {
            "challenge": outcome.challenge,
            "factors": outcome.factors,
            "webauthn": outcome.webauthn_options,
            "error": None,
        },
        status_code=202,
    )


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
    settings = container.settings
    if not csrf_matches(request, settings, csrf):
        return _login_page(
            request, settings, error="Your sign-in form expired; please try again.", status=400
        )
    try:
        outcome = container.gate.sign_in(
            session,
            email=email,
            password=password,
            kind=SessionKind.COOKIE,
            client=client_of(request, container.settings),
            now=container.clock.now(),
        )
    except TooManyAttempts as refused:
        return throttled_page(request, settings, refused)
    except NotAuthenticated as exc:
        return _login_page(
            request,
            settings,
            error=exc.detail,
            status=401,
            staff_door=isinstance(exc, UseStaffSignIn),
        )
    finally:
        background.add_task(container.deliver_notices)
    return outcome_page(request, outcome, settings)


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
    """The second step in the console: an authenticator code, a recovery code, or a
    WebAuthn assertion made by `static/webauthn.js`. Same-origin only: a cross-site form
    must not sign a victim's browser into someone else's account (login CSRF)."""
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
    except TooManyAttempts as refused:
        return throttled_page(request, container.settings, refused)
    except InvalidCredentials:
        return templates.TemplateResponse(
            request,
            "login_factor.html",
            {
                "challenge": challenge,
                "factors": [],
                "webauthn": None,
                "error": "That code is not right.",
            },
            status_code=401,
        )
    except NotAuthenticated as exc:
        return _login_page(request, container.settings, error=exc.detail, status=401)
    return outcome_page(request, outcome, container.settings)


@router.post("/login/passkey")
def login_passkey(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    credential: Annotated[str, Form(max_length=20_000)],
) -> Response:
    """A usernameless passkey sign-in made by `static/webauthn.js` (R5). Same-origin only,
    like every sign-in step (login CSRF)."""
    check_same_origin(request)
    try:
        outcome = passkey_sign_in(
            request,
            session,
            container,
            background,
            credential=credential,
            audience=PasskeyAudience.ACCOUNT,
        )
    except TooManyAttempts:
        return _login_page(
            request,
            container.settings,
            error="Too many failed sign-ins from your network. Wait a little and try again.",
            status=429,
        )
    except NotAuthenticated as exc:
        return _login_page(request, container.settings, error=exc.detail, status=401)
    return outcome_page(request, outcome, container.settings)


@router.get("/login/link", response_class=HTMLResponse)
def login_link_form(request: Request) -> Response:
    """The emailed link lands here; its token is in the fragment, never sent in a URL."""
    return templates.TemplateResponse(request, "login_link.html", {})


@router.post("/login/link")
def login_link(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    token: Annotated[str, Form(max_length=200)],
) -> Response:
    check_same_origin(request)
    try:
        outcome = container.gate.complete_link(
            session,
            token=token,
            client=client_of(request, container.settings),
            now=container.clock.now(),
        )
    except TooManyAttempts as refused:
        return throttled_page(request, container.settings, refused)
    except NotAuthenticated as exc:
        return _login_page(request, container.settings, error=exc.detail, status=401)
    background.add_task(container.deliver_notices)
    return outcome_page(request, outcome, container.settings)


@router.post("/logout")
def logout(
    request: Request,
    session: DbSession,
    container: AppContainer,
    forget_device: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Sign out; "This is a shared computer" forgets this browser's known device too.
    Same-origin only: a cross-site form must not sign people out (403)."""
    settings = container.settings
    check_same_origin(request, settings)
    device = request.cookies.get(cookie_name(DEVICE_COOKIE, settings)) if forget_device else None
    with contextlib.suppress(NotAuthenticated):
        identity.sign_out(
            session,
            principal=signed_in(request, session, container),
            now=container.clock.now(),
            forget_device=device,
        )
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        cookie_name(SESSION_COOKIE, settings), secure=settings.cookie_secure, httponly=True
    )
    if forget_device:
        response.delete_cookie(
            cookie_name(DEVICE_COOKIE, settings),
            secure=settings.cookie_secure,
            httponly=True,
            samesite="strict",
        )
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: DbSession, container: AppContainer) -> Response:
    try:
        principal = current_principal(request, session, container)
    except NotAuthenticated as exc:
        # An employee's session has its own console.
        staff = exc.code == "customer_session_required"
        return RedirectResponse("/staff" if staff else "/login", status_code=303)
    except Forbidden:  # enrol a factor or change the password first
        return RedirectResponse("/account/security", status_code=303)
    reader = current_reader(principal, session)
    keys = container.vault.keys
    profiles = households.list_profiles(
        session, keys, household_id=reader.household_id, profile_ids=set(reader.profile_ids)
    )
    devices = households.list_devices(session, household_id=principal.household_id)
    context = {
        "profiles": profiles,
        "devices": devices,
        "principal": principal,
        "recovery_pending": container.recovery.pending(session, owner=principal.owner),
    }
    return templates.TemplateResponse(request, "home.html", context)


@router.get("/profiles/{profile_id}", response_class=HTMLResponse)
def profile_page(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    kind: ItemKind | None = None,
) -> Response:
    try:
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    except Forbidden:  # enrol a factor or change the password first
        return RedirectResponse("/account/security", status_code=303)
    reader = current_reader(principal, session)
    if container.gate.camera_factor_missing(session, principal.owner, reader.profile_ids):
        # R5: camera recordings only after a second factor, whatever the session's stage.
        return RedirectResponse("/account/security", status_code=303)
    if profile_id not in reader.profile_ids:
        raise NotFound("No such profile.", code="profile_not_found")
    keys = container.vault.keys
    (profile,) = households.list_profiles(
        session, keys, household_id=reader.household_id, profile_ids={profile_id}
    )
    page = vault.list_items(
        session,
        reader=reader,
        profile_id=profile_id,
        kind=kind,
        cursor=cursor,
        limit=30,
        primary_only=True,
    )
    transcripts = vault.transcripts_of(session, container.vault, items=page.items)
    return templates.TemplateResponse(
        request,
        "profile.html",
        {
            "profile": profile,
            "items": page.items,
            "principal": principal,
            "transcripts": transcripts,
            # C11: how long the transcript of voice used in place of typing is kept.
            "ephemeral_kept_for": format_hours(container.policy.ephemeral_voice_max_age),
            "rights": rights_forms.panel(session, principal, profile),
            "copies": console_exports.panel(request, session, container, principal, profile.id),
            "next_cursor": page.next_cursor,
            "kind": kind.value if kind else "",
            "kinds": [
                k.value for k in ItemKind if k not in {ItemKind.TRANSCRIPT, ItemKind.THUMBNAIL}
            ],
        },
    )
