"""Console pages where a parent exercises a child's rights, and an adult their own (C6, C7,
C10): what is held, by category; deleting a selection, every item of some kinds, a time
range, a child's whole profile, or (the owner) closing the household's account.

Every deletion takes two steps: a review page that says what goes and asks for a fresh
second factor (or the password, without one) when the session has none (C7), then the
request itself, through the one deletion path (`ErasureEngine.start`, as the API's
`POST /api/v1/erasures`). Thin: who may erase what is the erasure API's requester rule.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import (
    InvalidInput,
    NotAuthenticated,
    StepUpRequired,
    TutelaError,
)
from tutela.deps import SESSION_COOKIE, AppContainer, DbSession, cookie_name
from tutela.erasure import announce
from tutela.erasure.api import MAX_SELECTION
from tutela.erasure.models import ScopeKind
from tutela.households.models import Profile, ProfileKind
from tutela.identity import factors
from tutela.identity.service import Principal
from tutela.web.forms import require_fresh_step_up, signed_in_customer, templates
from tutela.web.rights_forms import Checked, asked_of, check

router = APIRouter(include_in_schema=False)


def _confirm_page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    checked: Checked,
    *,
    idempotency: str,
    status: int = 200,
    error: str | None = None,
) -> Response:
    now = container.clock.now()
    fresh = principal.stepped_up_at is not None and now - principal.stepped_up_at <= timedelta(
        minutes=container.settings.step_up_minutes
    )
    owned = factors.list_factors(session, principal.owner)
    context: dict[str, Any] = {
        "principal": principal,
        "checked": checked,
        "profile": checked.profile,
        "fields": checked.asked.fields(),
        "idempotency": idempotency,
        "step_up": not fresh,
        "has_factor": bool(owned),
        "code_factor": any(f.kind != "webauthn" for f in owned)
        or factors.recovery_codes_left(session, principal.owner) > 0,
        "error": error,
    }
    return templates.TemplateResponse(request, "rights_confirm.html", context, status_code=status)


def _refused(
    request: Request, principal: Principal, profile_id: uuid.UUID, exc: TutelaError
) -> Response:
    context = {"principal": principal, "profile_id": profile_id, "error": exc.detail}
    return templates.TemplateResponse(
        request, "rights_refused.html", context, status_code=exc.status
    )


@router.post("/profiles/{profile_id}/erase/review", response_class=HTMLResponse)
def review(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    what: Annotated[str, Form(max_length=16)],
    item_id: Annotated[list[str], Form(max_length=MAX_SELECTION + 1)] = [],  # noqa: B006
    kind: Annotated[list[str], Form(max_length=6)] = [],  # noqa: B006
    since: Annotated[str, Form(max_length=10)] = "",
    until: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Say what a deletion takes and ask to confirm it, with step-up when due (C7).
    Nothing is changed here."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    try:
        checked = check(
            session, container, principal, profile_id, asked_of(what, item_id, kind, since, until)
        )
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    # A second press of the final button answers the same request (Idempotency-Key).
    return _confirm_page(
        request, session, container, principal, checked, idempotency=secrets.token_urlsafe(18)
    )


@router.post("/profiles/{profile_id}/erase")
def erase(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    what: Annotated[str, Form(max_length=16)],
    idempotency: Annotated[str, Form(min_length=16, max_length=40)],
    item_id: Annotated[list[str], Form(max_length=MAX_SELECTION + 1)] = [],  # noqa: B006
    kind: Annotated[list[str], Form(max_length=6)] = [],  # noqa: B006
    since: Annotated[str, Form(max_length=10)] = "",
    until: Annotated[str, Form(max_length=10)] = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    code: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Delete what the review page showed: step-up first when due (C7), then the one
    deletion path; the answer says where the signed receipt will be (A8, S8)."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    try:
        asked = asked_of(what, item_id, kind, since, until)
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    ref = f"account:{principal.account_id}"
    try:
        # A retry once the erasure took effect (the items or the child's profile gone)
        # answers the first request; only adults' profiles stay.
        row = session.get(Profile, (principal.household_id, profile_id))
        child = row is None or row.kind == ProfileKind.CHILD
        scope = asked.scope(principal, profile_id, child)
        earlier = container.erasure.idempotent(ref, idempotency, scope)
        if earlier is not None:
            return RedirectResponse(f"/account/privacy/erasures/{earlier.id}", status_code=303)
        checked = check(session, container, principal, profile_id, asked)
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    try:
        if confirm != "yes":
            raise InvalidInput(
                "Tick the box to confirm that this cannot be undone.", code="not_confirmed"
            )
        principal = require_fresh_step_up(
            request, session, container, principal, code=code, password=password
        )
    except (NotAuthenticated, InvalidInput, StepUpRequired) as exc:
        if isinstance(exc, NotAuthenticated) and exc.code == "session_ended":
            return RedirectResponse("/login", status_code=303)
        return _confirm_page(
            request,
            session,
            container,
            principal,
            checked,
            idempotency=idempotency,
            status=exc.status,
            error=exc.detail,
        )
    session.close()
    try:
        started = container.erasure.start(
            checked.scope, checked.requester, idempotency_key=idempotency, hold=container.hold
        )
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    background.add_task(container.deliver_notices)  # the confirmation, the home's notices
    if checked.scope.kind is ScopeKind.HOUSEHOLD:
        return _closed(request, container, started.id)
    return RedirectResponse(f"/account/privacy/erasures/{started.id}", status_code=303)


def _closed(request: Request, container: AppContainer, request_id: uuid.UUID) -> Response:
    """The household is closed: no session is left to show a page with, so this answer
    is the last one, with the receipt's address (C10)."""
    response = templates.TemplateResponse(
        request,
        "rights_done.html",
        {"closed": True, "request_id": request_id, "view": None},
    )
    response.delete_cookie(
        cookie_name(SESSION_COOKIE, container.settings),
        secure=container.settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/account/privacy/erasures/{request_id}", response_class=HTMLResponse)
def erasure_page(
    request_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    """One deletion this adult may see: what it erases, how far it is, its receipt."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    view = announce.household_request(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        account_id=principal.account_id,
        request_id=request_id,
    )
    context = {"principal": principal, "closed": False, "request_id": request_id, "view": view}
    return templates.TemplateResponse(request, "rights_done.html", context)
