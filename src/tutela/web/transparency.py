"""Console page where a customer sees every look by an employee at their recordings, and a
guardian at their children's, in plain words (R3, R9).

Thin: which profiles a customer sees is `households.visible_profile_ids`, and what was
looked at comes from the `AccessTransparency` port.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from tutela.core.errors import Forbidden, NotAuthenticated, TutelaError
from tutela.deps import AppContainer, DbSession, current_principal
from tutela.households import service as households
from tutela.households.models import Profile
from tutela.transparency.notice import PAGE as NOTICE_PAGE
from tutela.transparency.service import AccessRecord
from tutela.web.forms import templates

router = APIRouter(include_in_schema=False)
ACCESS_PAGE = "/privacy/access"
PAGE_SIZE = 50

# One item, as a parent would name it.
_ITEM_WORDS = {
    "voice": "voice recording",
    "transcript": "transcript of a voice request",
    "video": "camera recording",
    "thumbnail": "preview image of a camera recording",
    "snapshot": "camera snapshot",
    "location": "location history",
}


@dataclass(frozen=True)
class AccessLine:
    """One look, with the words the page says it in."""

    record: AccessRecord
    whose: str
    what: str


def _what(record: AccessRecord) -> str:
    if record.item_erased:
        return "a recording that has since been erased"
    if record.item_kind is None:
        return "list of recordings"
    return _ITEM_WORDS.get(record.item_kind, record.item_kind)


@router.get(ACCESS_PAGE, response_class=HTMLResponse)
def access_page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    try:
        principal = current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    except Forbidden:  # enrol a factor or change the password first
        return RedirectResponse("/account/security", status_code=303)
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    try:
        page = container.transparency.accesses_for(
            session,
            household_id=principal.household_id,
            profile_ids=frozenset(visible),
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except TutelaError as exc:  # a cursor that is not ours
        return templates.TemplateResponse(
            request,
            "access_log.html",
            _context(principal, container, [], None, error=exc.detail, older=False),
            status_code=exc.status,
        )
    names = _names(session, container, principal.household_id, visible)
    lines = [
        AccessLine(
            record=r,
            whose="your" if r.profile_id == principal.profile_id else f"{names[r.profile_id]}'s",
            what=_what(r),
        )
        for r in page.records
        if r.profile_id in names
    ]
    context = _context(
        principal, container, lines, page.next_cursor, error=None, older=cursor is not None
    )
    return templates.TemplateResponse(request, "access_log.html", context)


def _names(
    session: DbSession, container: AppContainer, household_id: uuid.UUID, ids: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    profiles = session.scalars(
        select(Profile).where(Profile.household_id == household_id, Profile.id.in_(ids))
    ).all()
    return {p.id: households.profile_view(container.vault.keys, p).name for p in profiles}


def _context(
    principal: Any,
    container: AppContainer,
    lines: list[AccessLine],
    next_cursor: str | None,
    *,
    error: str | None,
    older: bool,
) -> dict[str, Any]:
    return {
        "principal": principal,
        "lines": lines,
        "next_cursor": next_cursor,
        "older": older,
        "operator": container.staff_access.operator,
        "notice_url": NOTICE_PAGE,
        "error": error,
    }
