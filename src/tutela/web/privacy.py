"""Console pages where a parent manages and deletes data: automatic deletion per profile and
kind (A6, C9), keeping an inactive child's profile (A3), deleting one item for good (C6),
and the deletions in the home: each request an adult may see, with who asked (C6, S7).

Thin: who may do what is decided by `retention.service` and by the erasure API's requester
rule; these routes turn their answers into pages.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from tutela.core.errors import Conflict, Forbidden, NotAuthenticated, NotFound, TutelaError
from tutela.deps import AppContainer, DbSession, current_principal
from tutela.erasure import announce
from tutela.erasure.api import _customer_requester
from tutela.erasure.models import ScopeKind
from tutela.erasure.scope import Scope
from tutela.households import service as households
from tutela.households.models import Profile, ProfileKind, ProfileState
from tutela.households.service import ProfileView
from tutela.identity.service import Principal
from tutela.retention import service as retention
from tutela.retention.notice import format_age
from tutela.retention.service import RetentionView
from tutela.vault.models import MediaItem
from tutela.web.forms import templates

router = APIRouter(include_in_schema=False)
PRIVACY_PAGE = "/account/privacy"


@dataclass(frozen=True)
class PrivacyCard:
    """One profile on the privacy page: who, what applies, and whether you may keep it."""

    profile: ProfileView
    retention: RetentionView
    guardian: bool
    """True when the signed-in account is the child's guardian: only a guardian keeps (A3)."""


def _manageable(session: DbSession, principal: Principal) -> list[Profile]:
    """The household's profiles this account may manage, as `manageable_profile` rules."""
    candidates = session.scalars(
        select(Profile)
        .where(
            Profile.household_id == principal.household_id,
            Profile.state == ProfileState.ACTIVE,
        )
        .order_by(Profile.kind, Profile.created_at)
    ).all()
    found: list[Profile] = []
    for candidate in candidates:
        try:
            found.append(_profile(session, principal, candidate.id))
        except NotFound:
            continue
    return found


def _profile(session: DbSession, principal: Principal, profile_id: uuid.UUID) -> Profile:
    return retention.manageable_profile(
        session,
        household_id=principal.household_id,
        profile_id=profile_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
        role=principal.role,
    )


def _page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    cards = [
        PrivacyCard(
            profile=households.profile_view(container.vault.keys, profile),
            retention=retention.retention_view(session, container.policy, profile=profile),
            guardian=profile.kind == ProfileKind.CHILD and profile.id in visible,
        )
        for profile in _manageable(session, principal)
    ]
    deletions = announce.household_requests(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        account_id=principal.account_id,
        limit=50,
    )
    context: dict[str, Any] = {
        "principal": principal,
        "cards": cards,
        "deletions": deletions,
        "you": f"account:{principal.account_id}",
        "age": format_age,
        "error": error,
        "saved": request.query_params.get("saved"),
        "saved_profile": request.query_params.get("profile"),
        "kept": request.query_params.get("kept"),
        # Consent is decided for one's own profile and one's children (C6): web/consent.py.
        "consent_ids": visible,
    }
    return templates.TemplateResponse(request, "privacy.html", context, status_code=status)


@router.get(PRIVACY_PAGE, response_class=HTMLResponse)
def privacy(request: Request, session: DbSession, container: AppContainer) -> Response:
    try:
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    except Forbidden:  # enrol a factor or change the password first
        return RedirectResponse("/account/security", status_code=303)
    return _page(request, session, container, principal)


@router.post(PRIVACY_PAGE + "/{profile_id}/auto-delete")
def set_auto_delete(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    kind: Annotated[str, Form(max_length=16)],
    choice: Annotated[str, Form(max_length=8)],
) -> Response:
    """Delete a profile's items of one kind automatically after 3 or 18 months (A6)."""
    try:
        # A cross-site write is refused here (403), before anything is read or changed.
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    try:
        _profile(session, principal, profile_id)
        retention.set_auto_delete(
            session,
            household_id=principal.household_id,
            profile_id=profile_id,
            kind=kind,
            choice=choice,
            actor=f"account:{principal.account_id}",
            now=container.clock.now(),
        )
    except TutelaError as exc:
        session.rollback()
        return _page(request, session, container, principal, status=exc.status, error=exc.detail)
    return RedirectResponse(
        f"{PRIVACY_PAGE}?saved={kind}&profile={profile_id}#profile-{profile_id}", status_code=303
    )


@router.post(PRIVACY_PAGE + "/{profile_id}/keep")
def keep_profile(
    profile_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    """A guardian keeps an inactive child's profile from erasure; recorded as "console" (A3)."""
    try:
        # A cross-site write is refused here (403), before anything is read or changed.
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    try:
        retention.keep_inactive_child(
            session,
            household_id=principal.household_id,
            profile_id=profile_id,
            guardian_account_id=principal.account_id,
            how="console",
            now=container.clock.now(),
        )
    except TutelaError as exc:
        session.rollback()
        return _page(request, session, container, principal, status=exc.status, error=exc.detail)
    return RedirectResponse(
        f"{PRIVACY_PAGE}?kept={profile_id}#profile-{profile_id}", status_code=303
    )


@router.post("/profiles/{profile_id}/items/{item_id}/erase")
def erase_item(
    profile_id: uuid.UUID,
    item_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> Response:
    """Delete one item and what was derived from it (C6). Its key is destroyed before the
    answer (S6); the rest of the erasure, its check and its receipt follow in the worker."""
    try:
        # A cross-site write is refused here (403), before anything is read or changed.
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    item = session.get(MediaItem, (principal.household_id, item_id))
    if item is None or item.profile_id != profile_id:
        raise NotFound("No such profile or item.", code="not_found")
    scope = Scope(ScopeKind.ITEM, principal.household_id, item_id=item_id)
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    requester = _customer_requester(session, principal, scope, visible)
    session.close()
    page = f"/profiles/{profile_id}"
    try:
        started = container.erasure.start(scope, requester, hold=container.hold)
    except Conflict as exc:
        return RedirectResponse(f"{page}?refused={exc.code}", status_code=303)
    background.add_task(container.deliver_notices)  # a guardian's confirmation
    return RedirectResponse(f"{page}?erased={started.id}", status_code=303)
