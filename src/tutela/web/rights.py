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
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.core.errors import (
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    StepUpRequired,
    TutelaError,
)
from tutela.deps import SESSION_COOKIE, AppContainer, DbSession, client_of, cookie_name
from tutela.deps import current_principal as _current_principal
from tutela.erasure import announce
from tutela.erasure.api import MAX_SELECTION, _customer_requester
from tutela.erasure.models import ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole, Profile, ProfileKind
from tutela.households.service import ProfileView
from tutela.identity import factors
from tutela.identity.service import Principal
from tutela.vault.models import ItemKind
from tutela.vault.summary import Category, categories
from tutela.web.forms import templates

router = APIRouter(include_in_schema=False)

WHATS: Final = ("selection", "kinds", "range", "profile", "household")
"""What a console form may ask to delete."""
CHOSEN_KINDS: Final = (ItemKind.VOICE, ItemKind.VIDEO, ItemKind.SNAPSHOT, ItemKind.LOCATION)
"""Kinds a person chooses; transcripts and thumbnails go with their recording or clip."""
_WITH: Final = {ItemKind.VOICE.value: ItemKind.TRANSCRIPT, ItemKind.VIDEO.value: ItemKind.THUMBNAIL}


@dataclass(frozen=True)
class RightsPanel:
    """What a profile's page shows of its data and offers to delete."""

    profile_id: uuid.UUID
    child: bool
    own: bool
    owner: bool
    """The household's owner on their own page: closing the account is offered there."""
    categories: list[Category]
    kinds: tuple[str, ...] = tuple(k.value for k in CHOSEN_KINDS)

    @property
    def total(self) -> int:
        return sum(c.count for c in self.categories)

    @property
    def oldest(self) -> datetime | None:
        found = [c.oldest_captured_at for c in self.categories if c.oldest_captured_at]
        return min(found) if found else None


def panel(session: DbSession, principal: Principal, profile: ProfileView) -> RightsPanel:
    """The categories table and the deletion forms of a visible profile's page."""
    held = categories(session, household_id=principal.household_id, profile_ids={profile.id})
    own = profile.id == principal.profile_id
    return RightsPanel(
        profile_id=profile.id,
        child=profile.kind == ProfileKind.CHILD,
        own=own,
        owner=own and principal.role == AccountRole.OWNER,
        categories=held[profile.id],
    )


@dataclass(frozen=True)
class Asked:
    """A deletion as a console form asks for it, before it is a scope."""

    what: str
    item_ids: tuple[uuid.UUID, ...] = ()
    kinds: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    """The last day of the range, included."""

    def scope(self, principal: Principal, profile_id: uuid.UUID, child: bool) -> Scope:
        hh = principal.household_id
        if self.what == "household":
            return Scope(ScopeKind.HOUSEHOLD, hh)
        if self.what == "profile":
            if child:
                return Scope(ScopeKind.PROFILE, hh, profile_id=profile_id)
            # An adult's own profile signs in to their account: all of its items go instead.
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id)
        if self.what == "selection":
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id, item_ids=self.item_ids)
        if self.what == "kinds":
            return Scope(ScopeKind.ITEMS, hh, profile_id=profile_id, kinds=self.kinds)
        return Scope(
            ScopeKind.ITEMS,
            hh,
            profile_id=profile_id,
            since=_midnight(self.since),
            until=_midnight(self.until + timedelta(days=1)) if self.until else None,
        )

    def fields(self) -> list[tuple[str, str]]:
        """The form fields that ask for this again (the confirmation page's hidden ones)."""
        out = [("what", self.what)]
        out += [("item_id", str(i)) for i in self.item_ids]
        out += [("kind", k) for k in self.kinds]
        if self.since:
            out.append(("since", self.since.isoformat()))
        if self.until:
            out.append(("until", self.until.isoformat()))
        return out


def _midnight(day: date | None) -> datetime | None:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


def _day(text: str, label: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"The {label} date is not a date.", code="invalid_range") from None


def _asked(what: str, item_id: list[str], kind: list[str], since: str, until: str) -> Asked:
    if what not in WHATS:
        raise InvalidInput("Unknown kind of deletion.", code="invalid_scope")
    if what == "selection":
        if not item_id:
            raise InvalidInput("Choose at least one item to delete.", code="nothing_chosen")
        if len(item_id) > MAX_SELECTION:
            raise InvalidInput(
                f"Choose at most {MAX_SELECTION} items at a time.", code="selection_too_large"
            )
        try:
            ids = tuple(dict.fromkeys(uuid.UUID(i) for i in item_id))
        except ValueError:
            raise NotFound("No such profile or item.", code="not_found") from None
        return Asked(what, item_ids=ids)
    if what == "kinds":
        chosen = tuple(dict.fromkeys(k for k in kind))
        if not chosen:
            raise InvalidInput("Choose at least one kind of data.", code="nothing_chosen")
        if not set(chosen) <= {k.value for k in CHOSEN_KINDS}:
            raise InvalidInput("Unknown kind of data.", code="invalid_scope")
        return Asked(what, kinds=chosen)
    if what == "range":
        start, end = _day(since, "first"), _day(until, "last")
        if start is None and end is None:
            raise InvalidInput("Give the first day, the last day, or both.", code="nothing_chosen")
        if start and end and end < start:
            raise InvalidInput("The last day is before the first.", code="invalid_range")
        return Asked(what, since=start, until=end)
    return Asked(what)


@dataclass(frozen=True)
class Checked:
    """A deletion this account may ask for: its scope, requester and what it takes."""

    asked: Asked
    scope: Scope
    requester: Requester
    profile: ProfileView
    rows: list[Category]
    """What goes, by category (the whole profile's, a range's, the kinds'); empty for a
    selection (its count is the selection's) and for the household."""


def _check(
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    profile_id: uuid.UUID,
    asked: Asked,
) -> Checked:
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    if profile_id not in visible:
        raise NotFound("No such profile or item.", code="not_found")
    (profile,) = households.list_profiles(
        session, container.vault.keys, household_id=principal.household_id, profile_ids={profile_id}
    )
    scope = asked.scope(principal, profile_id, profile.kind == ProfileKind.CHILD)
    requester = _customer_requester(session, principal, scope, visible)
    rows: list[Category] = []
    if asked.what in ("kinds", "range", "profile"):
        held = categories(
            session,
            household_id=principal.household_id,
            profile_ids={profile_id},
            since=scope.since,
            until=scope.until,
        )[profile_id]
        wanted = set(asked.kinds) | {_WITH[k].value for k in asked.kinds if k in _WITH}
        rows = [c for c in held if not wanted or c.kind.value in wanted]
    return Checked(asked, scope, requester, profile, rows)


def _signed_in(
    request: Request, session: DbSession, container: AppContainer
) -> Principal | Response:
    try:
        # A cross-site write is refused here (403), before anything is read or changed.
        return _current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    except Forbidden as exc:
        if exc.code == "cross_site_request":
            raise
        return RedirectResponse("/account/security", status_code=303)


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
    principal = _signed_in(request, session, container)
    if isinstance(principal, Response):
        return principal
    try:
        checked = _check(
            session, container, principal, profile_id, _asked(what, item_id, kind, since, until)
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
    principal = _signed_in(request, session, container)
    if isinstance(principal, Response):
        return principal
    try:
        asked = _asked(what, item_id, kind, since, until)
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
        checked = _check(session, container, principal, profile_id, asked)
    except TutelaError as exc:
        return _refused(request, principal, profile_id, exc)
    try:
        if confirm != "yes":
            raise InvalidInput(
                "Tick the box to confirm that this cannot be undone.", code="not_confirmed"
            )
        if code.strip() or password:
            principal = _step_up(request, session, container, principal, code, password)
        container.gate.require_step_up(session, principal, now=container.clock.now())
    except NotAuthenticated as exc:
        if exc.code == "session_ended":
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
    except (InvalidInput, StepUpRequired) as exc:
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


def _step_up(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    code: str,
    password: str,
) -> Principal:
    cleaned = code.strip().replace(" ", "")
    is_totp = cleaned.isdigit() and len(cleaned) == 6
    container.gate.step_up(
        session,
        principal=principal,
        password=password or None,
        code=cleaned if is_totp else None,
        recovery_code=cleaned if cleaned and not is_totp else None,
        webauthn=None,
        webauthn_token=None,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )
    return _current_principal(request, session, container)


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
    principal = _signed_in(request, session, container)
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
