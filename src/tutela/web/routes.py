"""Console routes: sign-in, the household, a profile's items with players. No business rules."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tutela.core.errors import InvalidCredentials, NotAuthenticated, NotFound
from tutela.deps import (
    SESSION_COOKIE,
    AppContainer,
    DbSession,
    client_address,
    cookie_name,
    current_principal,
    current_reader,
)
from tutela.households import service as households
from tutela.identity import service as identity
from tutela.identity.models import SessionKind
from tutela.settings import Settings
from tutela.vault import service as vault
from tutela.vault.models import ItemKind

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
CSRF_COOKIE = "tutela_csrf"


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


def _login_page(
    request: Request,
    settings: Settings,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html", {"csrf": token, "error": error}, status_code=status
    )
    response.set_cookie(
        cookie_name(CSRF_COOKIE, settings),
        token,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, container: AppContainer) -> Response:
    return _login_page(request, container.settings)


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    container: AppContainer,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=100)],
) -> Response:
    settings = container.settings
    expected = request.cookies.get(cookie_name(CSRF_COOKIE, settings), "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return _login_page(
            request, settings, error="Your sign-in form expired; please try again.", status=400
        )
    try:
        issued = identity.sign_in(
            session,
            container.vault.keys,
            container.hasher,
            email=email,
            password=password,
            kind=SessionKind.COOKIE,
            ttl=timedelta(hours=container.settings.session_ttl_hours),
            user_agent=request.headers.get("user-agent", ""),
            address=client_address(request),
            now=container.clock.now(),
        )
    except InvalidCredentials:
        return _login_page(
            request, settings, error="The email or password is not right.", status=401
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        cookie_name(SESSION_COOKIE, settings),
        issued.token,
        httponly=True,
        samesite="lax",
        secure=container.settings.cookie_secure,
        max_age=container.settings.session_ttl_hours * 3600,
    )
    response.delete_cookie(
        cookie_name(CSRF_COOKIE, settings), secure=settings.cookie_secure, httponly=True
    )
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession, container: AppContainer) -> Response:
    try:
        principal = current_principal(request, session, container)
        identity.sign_out(session, principal=principal, now=container.clock.now())
    except NotAuthenticated:
        pass
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        cookie_name(SESSION_COOKIE, container.settings),
        secure=container.settings.cookie_secure,
        httponly=True,
    )
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: DbSession, container: AppContainer) -> Response:
    try:
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    reader = current_reader(principal, session)
    keys = container.vault.keys
    profiles = households.list_profiles(
        session, keys, household_id=reader.household_id, profile_ids=set(reader.profile_ids)
    )
    devices = households.list_devices(session, household_id=principal.household_id)
    return templates.TemplateResponse(
        request, "home.html", {"profiles": profiles, "devices": devices, "principal": principal}
    )


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
    reader = current_reader(principal, session)
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
            "next_cursor": page.next_cursor,
            "kind": kind.value if kind else "",
            "kinds": [
                k.value for k in ItemKind if k not in {ItemKind.TRANSCRIPT, ItemKind.THUMBNAIL}
            ],
        },
    )
