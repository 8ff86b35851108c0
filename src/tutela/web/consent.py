"""Console pages of consent: what Tutela may do with a profile's recordings, each purpose
turned on or off, sharing asked for on its own, refusing all further recording with a
confirmation, the history of every choice, and the public consent notice (C3, C4, C6, C7).

Thin: who may decide for whom, and every rule of a grant, are `consent.service` and the
ledger's; these routes turn their answers into pages. Each write is a cookie session's
POST, refused cross-site before anything is read (as every console POST).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.routing import NoMatchFound

from tutela.consent import notice, service
from tutela.consent.ledger import ConsentLedger, Decision, Reason
from tutela.consent.models import Channel
from tutela.core.errors import (
    InvalidInput,
    NotAuthenticated,
    NotFound,
    StepUpRequired,
    TooManyAttempts,
    TutelaError,
)
from tutela.deps import AppContainer, DbSession
from tutela.households import service as households
from tutela.households.models import Profile
from tutela.identity.service import Principal
from tutela.web.consent_history import history_lines
from tutela.web.consent_step_up import ask
from tutela.web.forms import signed_in_customer, step_up, templates, with_retry_after

router = APIRouter(include_in_schema=False)
PAGE: Final = "/privacy/{profile_id}/consent"
PARENTAL_PAGE: Final = "/privacy/{profile_id}/parental-consent"
"""Where a parent verifies their consent, when the console has that page."""
PARENTAL_PAGE_NAME: Final = "parental_consent_page"
FIELD: Final = "purpose."
"""A purpose's radio group is named `purpose.<name>`, valued `on` or `off`."""

STATE_WORDS: Final[dict[Reason, str]] = {
    Reason.GRANTED: "On",
    Reason.DEFAULT_ON: "On",
    Reason.NOT_GRANTED: "Off",
    Reason.WITHDRAWN: "Off",
    Reason.FRESH_CONSENT_NEEDED: "Asked again: the notice changed",
    Reason.PARENTAL_CONSENT_REQUIRED: "Off until a parent's consent is verified",
}
DONE: Final = {"saved", "unchanged", "refused", "verified"}
HISTORY_EVENTS: Final = 500
"""The newest events the page shows (the API's history has them all)."""


@dataclass(frozen=True)
class PurposeRow:
    name: str
    title: str
    description: str
    state: str
    """The current state in words: `STATE_WORDS`."""
    on: bool
    by_default: bool
    separate: bool


async def posted_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields: a purpose's field is named after the purpose, so
    the names are not known before the purposes file is read."""
    form = await request.form(max_fields=100)
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}


PostedFields = Annotated[dict[str, str], Depends(posted_fields)]


def _rows(
    ledger: ConsentLedger, state: dict[str, Decision], pending: dict[str, bool]
) -> list[PurposeRow]:
    """Each purpose's row; a choice posted but waiting for a step-up stays ticked."""
    return [
        PurposeRow(
            name=name,
            title=ledger.catalogue[name].title,
            description=ledger.catalogue[name].description,
            state=STATE_WORDS.get(d.reason, "Off"),
            on=pending.get(name, d.allowed),
            by_default=d.reason is Reason.DEFAULT_ON,
            separate=ledger.catalogue[name].separate,
        )
        for name, d in state.items()
    ]


def parental_consent_link(request: Request, profile_id: uuid.UUID) -> str | None:
    """The console's page where a parent verifies consent, if this console has one."""
    try:  # by name: routes of included routers are not listed in `app.routes`
        return str(request.app.url_path_for(PARENTAL_PAGE_NAME, profile_id=str(profile_id)))
    except NoMatchFound:
        pass
    for route in request.app.routes:
        if getattr(route, "path", None) == PARENTAL_PAGE:
            return PARENTAL_PAGE.format(profile_id=profile_id)
    return None


def _page(
    request: Request,
    session: Session,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
    *,
    template: str = "consent.html",
    status: int = 200,
    error: str | None = None,
    pending: dict[str, bool] | None = None,
) -> Response:
    """The consent page; with `pending`, those choices wait for a step-up (C7)."""
    who = service.whose(session, principal, profile_id)
    ledger = container.consent
    subject = who.subject
    profile = session.get(Profile, (subject.household_id, subject.profile_id))
    if profile is None:  # whose() found it: only a concurrent erasure gets here
        raise NotFound("No such profile.", code="not_found")
    verified = (
        ledger.verified_parental_consent(session, subject, who.guardian_account_id) is not None
        if subject.is_child
        else True
    )
    rows = _rows(ledger, ledger.state(session, subject, container.clock.now()), pending or {})
    done = request.query_params.get("done")
    context: dict[str, Any] = {
        "principal": principal,
        "profile": households.profile_view(container.vault.keys, profile),
        "own": subject.profile_id == principal.profile_id,
        "child": subject.is_child,
        "verified": verified,
        "parental_link": parental_consent_link(request, profile_id),
        "main": [r for r in rows if not r.separate],
        "separate": [r for r in rows if r.separate],
        "history": history_lines(
            session, container, principal, ledger.history(session, subject)[:HISTORY_EVENTS]
        ),
        "notice_version": ledger.catalogue.notice_version,
        "field": FIELD,
        "error": error,
        "done": done if done in DONE else None,
        "step_up": ask(session, ledger, principal, pending) if pending else None,
    }
    return templates.TemplateResponse(request, template, context, status_code=status)


def _unchanged(
    request: Request,
    session: Session,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
    refused: TutelaError,
) -> Response:
    """The consent page again after a refused change, with its reason: nothing of the
    change is kept."""
    session.rollback()
    return _page(
        request,
        session,
        container,
        principal,
        profile_id,
        status=refused.status,
        error=f"{refused.detail} Nothing was changed.",
    )


def _choices(fields: dict[str, str], shown: dict[str, bool]) -> dict[str, bool]:
    """The purposes whose posted choice differs from what the page showed as current:
    only real changes are appended to the ledger."""
    wanted: dict[str, bool] = {}
    for key, value in fields.items():
        if not key.startswith(FIELD):
            continue
        name = key.removeprefix(FIELD)
        if value not in {"on", "off"}:
            raise InvalidInput("Each choice is on or off.", code="invalid_choice")
        wanted[name] = value == "on"
    return {name: on for name, on in wanted.items() if shown.get(name) is not on}


@router.get(PAGE, response_class=HTMLResponse)
def consent_page(
    profile_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    """A profile's consent: each purpose's state, the forms, the history (C3, C4, C6)."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    return _page(request, session, container, principal, profile_id)


@router.post(PAGE)
def change_consent(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    fields: PostedFields,
) -> Response:
    """Turn purposes on or off, under the notice version the page showed (C3). Sharing
    comes from a form of its own; the ledger refuses it bundled with another grant (C4).
    Turning on what is off by default asks first for a code or the password (C7)."""
    # A cross-site write is refused here (403), before anything is read or changed.
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    who = service.whose(session, principal, profile_id)
    now = container.clock.now()
    code, password = fields.get("code", ""), fields.get("password", "")
    attempted = bool(code.strip() or password)
    changes: dict[str, bool] = {}
    try:
        version = int(fields.get("notice_version", ""))
        shown = {
            n: d.allowed for n, d in container.consent.state(session, who.subject, now).items()
        }
        changes = _choices(fields, shown)
        if not changes:
            return RedirectResponse(
                PAGE.format(profile_id=profile_id) + "?done=unchanged", status_code=303
            )
        if attempted:
            principal = step_up(request, session, container, principal, code, password)
        service.change(
            session,
            container.consent,
            principal,
            profile_id,
            changes,
            notice_version=version,
            channel=Channel.CONSOLE,
            now=now,
            keys=container.vault.keys,
            origin=container.settings.origin,
            gate=container.gate,
        )
    except ValueError:
        return _page(
            request,
            session,
            container,
            principal,
            profile_id,
            status=422,
            error="The form was not complete: nothing was changed.",
        )
    except (StepUpRequired, NotAuthenticated, TooManyAttempts) as exc:
        if isinstance(exc, NotAuthenticated) and exc.code == "session_ended":
            return RedirectResponse("/login", status_code=303)
        # The first press without a code is the next step, not a mistake: the choices
        # stay ticked, with the field that confirms it is you (C7).
        session.rollback()
        page = _page(
            request,
            session,
            container,
            principal,
            profile_id,
            status=exc.status if attempted else 200,
            error=exc.detail if attempted else None,
            pending=changes,
        )
        return with_retry_after(page, exc) if isinstance(exc, TooManyAttempts) else page
    except TutelaError as exc:
        return _unchanged(request, session, container, principal, profile_id, exc)
    background.add_task(container.deliver_notices)
    return RedirectResponse(PAGE.format(profile_id=profile_id) + "?done=saved", status_code=303)


@router.get(PAGE + "/refuse", response_class=HTMLResponse)
def refuse_page(
    profile_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    """The confirmation step before all further recording is refused (C6)."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    return _page(request, session, container, principal, profile_id, template="consent_refuse.html")


@router.post(PAGE + "/refuse")
def refuse_collection(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Refuse further collection and use (C6), once confirmed: every purpose withdrawn,
    the profile's uploads refused from now on, each guardian told."""
    # A cross-site write is refused here (403), before anything is read or changed.
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    if confirm != "yes":
        return _page(
            request, session, container, principal, profile_id, template="consent_refuse.html"
        )
    try:
        service.refuse(
            session,
            container.consent,
            principal,
            profile_id,
            channel=Channel.CONSOLE,
            now=container.clock.now(),
            keys=container.vault.keys,
            origin=container.settings.origin,
        )
    except TutelaError as exc:
        return _unchanged(request, session, container, principal, profile_id, exc)
    background.add_task(container.deliver_notices)
    return RedirectResponse(PAGE.format(profile_id=profile_id) + "?done=refused", status_code=303)


@router.get("/notices/consent", response_class=HTMLResponse)
def consent_notice(container: AppContainer) -> Response:
    """The public consent notice, generated from the purposes file (C3)."""
    return HTMLResponse(notice.render_html(container.consent.catalogue))
