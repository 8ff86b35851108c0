"""Console pages of account recovery: "Forgot your password?", the emailed link's page,
cancelling a waiting reset (R5, R6). Thin: every rule lives in `identity.recovery`.

Every form posts same-origin only (`check_same_origin`), like the sign-in steps; the
emailed links carry their token in the URL fragment, which no server or log sees.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import NotAuthenticated, TooManyAttempts, TutelaError
from tutela.deps import AppContainer, DbSession, check_same_origin, client_of, signed_in
from tutela.identity import password_rules
from tutela.identity.recovery import RecoveryStart
from tutela.identity.service import AnyPrincipal
from tutela.web.forms import factor_answer, templates

router = APIRouter(include_in_schema=False)
LINK_REFUSALS = frozenset({"recovery_link_invalid", "recovery_link_expired", "recovery_link_used"})


def _wait_words(exc: TooManyAttempts) -> str:
    seconds = float(exc.extra.get("retry_after", 0) or 0)
    wait = (
        f"{max(1, math.ceil(seconds))} seconds"
        if seconds < 90
        else f"{math.ceil(seconds / 60)} minutes"
    )
    return f"Too many requests from your network. Try again in {wait}."


def _page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status)


@router.get("/forgot", response_class=HTMLResponse)
def forgot_form(request: Request) -> Response:
    return _page(request, "forgot.html", error=None)


@router.post("/forgot")
def forgot(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=254)],
) -> Response:
    """The same page whether or not the address has an account."""
    check_same_origin(request)
    client, now = client_of(request, container.settings), container.clock.now()
    try:
        container.recovery.admit(session, email=email, client=client, now=now)
    except TooManyAttempts as exc:
        return _page(request, "forgot.html", 429, error=_wait_words(exc))
    background.add_task(
        container.recovery.send_link_later,
        email=email,
        client=client,
        now=now,
        deliver=container.deliver_notices,
    )
    return _page(request, "forgot_sent.html", 202, minutes=container.settings.recovery_link_minutes)


@router.get("/recover", response_class=HTMLResponse)
def recover_landing(request: Request) -> Response:
    """The emailed link lands here; a script copies its token from the fragment."""
    return _page(request, "recover_open.html")


def _form(
    request: Request,
    token: str,
    opened: RecoveryStart,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    if opened.status == "delayed":
        return _page(request, "recover_delayed.html", status, until=opened.delay_until)
    return _page(
        request,
        "recover.html",
        status,
        token=token,
        factor_required=opened.factor_required,
        recovery_codes="recovery_code" in opened.factors,
        delay_days=opened.delay_days,
        webauthn=opened.webauthn_options,
        guidance=password_rules.GUIDANCE,
        error=error,
    )


def _refused(request: Request, exc: TutelaError) -> Response:
    return _page(request, "recover_refused.html", exc.status, error=exc.detail)


@router.post("/recover/open")
def recover_open(
    request: Request,
    session: DbSession,
    container: AppContainer,
    token: Annotated[str, Form(max_length=200)],
) -> Response:
    check_same_origin(request)
    try:
        opened = container.recovery.start(session, token=token, now=container.clock.now())
    except TutelaError as exc:
        return _refused(request, exc)
    return _form(request, token, opened)


@router.post("/recover")
def recover(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    token: Annotated[str, Form(max_length=200)],
    new_password: Annotated[str, Form(max_length=1024)],
    code: Annotated[str, Form(max_length=40)] = "",
    webauthn: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    """The new password, with a code, a recovery code or a passkey's assertion (made by
    `static/webauthn.js`) when the account has a second factor."""
    check_same_origin(request)
    background.add_task(container.deliver_notices)
    answer = factor_answer(code, webauthn)
    now = container.clock.now()
    try:
        outcome = container.recovery.complete(
            session,
            token=token,
            new_password=new_password,
            code=answer.code,
            recovery_code=answer.recovery_code,
            webauthn=answer.webauthn,
            client=client_of(request, container.settings),
            now=now,
        )
    except TooManyAttempts as exc:
        return _page(request, "recover_refused.html", 429, error=_wait_words(exc))
    except TutelaError as exc:  # a wrong code, a refused password, a spent link
        session.rollback()
        if exc.code in LINK_REFUSALS:
            return _refused(request, exc)
        try:
            opened = container.recovery.start(session, token=token, now=now)
        except TutelaError as gone:
            return _refused(request, gone)
        return _form(request, token, opened, error=exc.detail, status=exc.status)
    if outcome.status == "delayed":
        return _page(request, "recover_delayed.html", 202, until=outcome.delay_until, fresh=True)
    return _page(request, "recover_done.html")


@router.get("/recover/cancel", response_class=HTMLResponse)
def cancel_landing(request: Request) -> Response:
    """The cancel link of a waiting reset's notice lands here (token in the fragment)."""
    return _page(request, "recover_cancel.html", done=False, error=None)


@router.post("/recover/cancel")
def cancel(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    token: Annotated[str, Form(max_length=200)],
) -> Response:
    check_same_origin(request)
    try:
        container.recovery.cancel(session, token=token, now=container.clock.now())
    except TutelaError as exc:
        return _page(request, "recover_cancel.html", exc.status, done=False, error=exc.detail)
    background.add_task(container.deliver_notices)
    return _page(request, "recover_cancel.html", done=True, error=None)


def _owner_page(
    request: Request, session: DbSession, container: AppContainer, principal: AnyPrincipal
) -> Response:
    pending = (
        None
        if principal.owner.is_staff
        else container.recovery.pending(session, owner=principal.owner)
    )
    return _page(request, "account_recovery.html", principal=principal, pending=pending)


@router.get("/account/recovery", response_class=HTMLResponse)
def account_recovery(request: Request, session: DbSession, container: AppContainer) -> Response:
    """A signed-in owner sees a waiting reset of the account and can cancel it. Any live
    session may, whatever its stage: stopping a takeover must wait for nothing."""
    try:
        principal = signed_in(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    return _owner_page(request, session, container, principal)


@router.post("/account/recovery/cancel")
def account_recovery_cancel(
    request: Request, session: DbSession, container: AppContainer, background: BackgroundTasks
) -> Response:
    try:
        principal = signed_in(request, session, container)  # same-origin checked there
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    if not principal.owner.is_staff:
        container.recovery.cancel_pending(session, owner=principal.owner, now=container.clock.now())
    background.add_task(container.deliver_notices)
    return RedirectResponse("/account/recovery", status_code=303)
