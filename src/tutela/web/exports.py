"""Console pages for a copy of a profile's data (C6, C7): what a copy holds, asking for one
after confirming it is you, and the account's copies with their state in words.

Thin: who may export which profile, when a copy is ready and when its link expires are
`exports.service` and `exports.rules` (through the API's `ExportOut`, so the console
shows what the API answers). The download link is the API's own
`GET /api/v1/exports/{id}/download`: `deps.current_principal` accepts the console's
session cookie, and that route records the download in the audit trail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import NotAuthenticated, StepUpRequired, TooManyAttempts, TutelaError
from tutela.deps import AppContainer, DbSession, check_same_origin
from tutela.exports import service
from tutela.exports.api import ExportOut
from tutela.exports.rules import OPEN_STATES
from tutela.households import service as households
from tutela.identity import factors
from tutela.identity.service import Principal
from tutela.web.forms import (
    require_fresh_step_up,
    signed_in_customer,
    templates,
    with_retry_after,
)

router = APIRouter(include_in_schema=False)
EXPORTS_PAGE = "/account/privacy/exports"


@dataclass(frozen=True)
class StepUp:
    """Whether asking needs a fresh confirmation (C7), and with what: an authenticator or
    recovery code, a passkey on the security page, or the password without a factor."""

    needed: bool
    code_factor: bool
    has_factor: bool


@dataclass(frozen=True)
class Copy:
    """One export as a row of the console: the API's view of it and whose data it is."""

    export: ExportOut
    profile_name: str | None
    """None when the account no longer sees the profile (no longer its guardian)."""

    @property
    def open(self) -> bool:
        return self.export.state in OPEN_STATES


@dataclass(frozen=True)
class CopiesPanel:
    """The "Download a copy" section of a profile's page."""

    profile_id: uuid.UUID
    own: bool
    copies: list[Copy]
    step_up: StepUp
    link_days: float
    asked: uuid.UUID | None
    """The copy just asked for, when it is one of this list: announced as a status."""

    @property
    def open(self) -> bool:
        return any(c.open for c in self.copies)


def _visible(session: DbSession, principal: Principal) -> set[uuid.UUID]:
    return households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )


def _step_up_state(session: DbSession, container: AppContainer, principal: Principal) -> StepUp:
    try:
        container.gate.require_step_up(session, principal, now=container.clock.now())
        needed = False
    except StepUpRequired:
        needed = True
    owned = factors.list_factors(session, principal.owner)
    return StepUp(
        needed=needed,
        code_factor=any(f.kind != "webauthn" for f in owned)
        or factors.recovery_codes_left(session, principal.owner) > 0,
        has_factor=bool(owned),
    )


def _copies(
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    *,
    profile_id: uuid.UUID | None = None,
) -> list[Copy]:
    now = container.clock.now()
    exports = service.list_exports(
        session, household_id=principal.household_id, account_id=principal.account_id
    )
    if profile_id is not None:
        exports = [e for e in exports if e.profile_id == profile_id]
    names = {
        p.id: p.name
        for p in households.list_profiles(
            session,
            container.vault.keys,
            household_id=principal.household_id,
            profile_ids={e.profile_id for e in exports} & _visible(session, principal),
        )
    }
    return [Copy(ExportOut.of(e, now=now), names.get(e.profile_id)) for e in exports]


def _asked(request: Request, copies: list[Copy]) -> uuid.UUID | None:
    # Only an id of a listed copy is announced: a link cannot put words on the page.
    wanted = request.query_params.get("export", "")
    return next((c.export.id for c in copies if str(c.export.id) == wanted), None)


def panel(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
) -> CopiesPanel:
    """The "Download a copy" section of a visible profile's page (C6)."""
    copies = _copies(session, container, principal, profile_id=profile_id)
    return CopiesPanel(
        profile_id=profile_id,
        own=profile_id == principal.profile_id,
        copies=copies,
        step_up=_step_up_state(session, container, principal),
        link_days=container.settings.export_link_days,
        asked=_asked(request, copies),
    )


def _confirm_page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
    *,
    status: int,
    error: str | None,
) -> Response:
    (profile,) = households.list_profiles(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        profile_ids={profile_id},
    )
    context: dict[str, Any] = {
        "principal": principal,
        "profile": profile,
        "own": profile_id == principal.profile_id,
        "step_up": _step_up_state(session, container, principal),
        "link_days": container.settings.export_link_days,
        "error": error,
    }
    return templates.TemplateResponse(request, "export_confirm.html", context, status_code=status)


def _refused(
    request: Request, principal: Principal, profile_id: uuid.UUID, exc: TutelaError
) -> Response:
    context = {"principal": principal, "profile_id": profile_id, "error": exc.detail}
    return templates.TemplateResponse(
        request, "export_refused.html", context, status_code=exc.status
    )


@router.post("/profiles/{profile_id}/exports")
def ask_for_copy(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    code: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Ask for a copy of a profile's data (C6): not found before anything else, then a
    fresh second factor (or the password without one, C7), then the export is queued
    and the answer leads back to the profile's list of copies."""
    # A cross-site form is refused here (403), before anything is read or changed.
    check_same_origin(request, container.settings)
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    visible = _visible(session, principal)
    if container.gate.camera_factor_missing(session, principal.owner, frozenset(visible)):
        # R5, as the profile page: camera recordings only after a second factor.
        return RedirectResponse("/account/security", status_code=303)
    try:
        service.check_exportable(
            session, household_id=principal.household_id, profile_id=profile_id, visible=visible
        )
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    attempted = bool(code.strip() or password)
    try:
        principal = require_fresh_step_up(
            request, session, container, principal, code=code, password=password
        )
    except NotAuthenticated as exc:
        if exc.code == "session_ended":
            return RedirectResponse("/login", status_code=303)
        return _confirm_page(
            request, session, container, principal, profile_id, status=exc.status, error=exc.detail
        )
    except StepUpRequired as exc:
        # The first press without a code is the next step, not a mistake.
        return _confirm_page(
            request,
            session,
            container,
            principal,
            profile_id,
            status=exc.status if attempted else 200,
            error=exc.detail if attempted else None,
        )
    except TooManyAttempts as exc:
        page = _confirm_page(
            request, session, container, principal, profile_id, status=exc.status, error=exc.detail
        )
        return with_retry_after(page, exc)
    try:
        export = service.request_export(
            session,
            household_id=principal.household_id,
            account_id=principal.account_id,
            profile_id=profile_id,
            visible=visible,
            now=container.clock.now(),
        )
    except TutelaError as exc:
        session.rollback()
        return _refused(request, principal, profile_id, exc)
    container.erasure.wakeup.local()  # this process's own worker packages it now
    return RedirectResponse(f"/profiles/{profile_id}?export={export.id}#copies", status_code=303)


@router.get(EXPORTS_PAGE, response_class=HTMLResponse)
def copies_page(request: Request, session: DbSession, container: AppContainer) -> Response:
    """Every copy this account asked for, of each profile, with its state in words."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    copies = _copies(session, container, principal)
    visible = _visible(session, principal)
    profiles = households.list_profiles(
        session, container.vault.keys, household_id=principal.household_id, profile_ids=visible
    )
    context = {
        "principal": principal,
        "copies": copies,
        "profiles": profiles,
        "open": any(c.open for c in copies),
        "link_days": container.settings.export_link_days,
    }
    return templates.TemplateResponse(request, "exports.html", context)
