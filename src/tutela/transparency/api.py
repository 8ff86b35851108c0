"""Routes of access transparency: a customer's access log (R3, R9) and the public
staff-access notice, current and every published version (R9)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime, BaseModel

from tutela.core.errors import ConfigurationError, InvalidInput, NotFound
from tutela.deps import AppContainer, CurrentReader, DbSession
from tutela.transparency import service
from tutela.transparency.notice import PAGE
from tutela.transparency.service import AccessRecord

router = APIRouter(tags=["transparency"])

# The notice is text and one inline style sheet: nothing may load or run.
_NOTICE_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
    "cache-control": "public, max-age=300",
}


class AccessedItemOut(BaseModel):
    id: uuid.UUID
    kind: str
    captured_at: datetime


class AccessOut(BaseModel):
    id: uuid.UUID
    profile_id: uuid.UUID
    accessed_at: datetime
    who: str
    """The employee's role and a pseudonym stable within the household, e.g. "Trust &
    Safety reviewer #4f2a"; never a name, an email or an employee id (R9)."""
    role: str
    purpose: str
    purpose_title: str
    ticket: str | None
    policy_id: str
    decision_id: uuid.UUID | None
    target: str
    """"item" (one item, in `item` unless since erased) or "profile" (the list of items)."""
    item: AccessedItemOut | None
    item_erased: bool

    @classmethod
    def of(cls, record: AccessRecord) -> AccessOut:
        item = None
        if record.item_id and record.item_kind and record.item_captured_at:
            item = AccessedItemOut(
                id=record.item_id, kind=record.item_kind, captured_at=record.item_captured_at
            )
        return cls(
            id=record.id,
            profile_id=record.profile_id,
            accessed_at=record.accessed_at,
            who=record.who,
            role=record.staff_role,
            purpose=record.purpose.value,
            purpose_title=record.purpose_title,
            ticket=record.ticket,
            policy_id=record.policy_id,
            decision_id=record.decision_id,
            target=record.target.value,
            item=item,
            item_erased=record.item_erased,
        )


class AccessPageOut(BaseModel):
    accesses: list[AccessOut]
    next_cursor: str | None
    notice_url: str


class NoticeVersionOut(BaseModel):
    version: int
    published_at: datetime
    policy_sha256: str
    url: str


@router.get("/api/v1/access-log", response_model=AccessPageOut)
def access_log(
    reader: CurrentReader,
    session: DbSession,
    container: AppContainer,
    profile_id: uuid.UUID | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> AccessPageOut:
    """Each look by an employee at the media of a profile the customer sees (their own;
    a guardian's children's), newest first (R3, R9). Another profile, another
    household's included, answers 404 `profile_not_found`."""
    if limit > container.settings.page_size_max:
        raise InvalidInput(
            f"A page holds at most {container.settings.page_size_max} entries.",
            code="page_too_large",
        )
    profiles = reader.profile_ids
    if profile_id is not None:
        if profile_id not in profiles:
            raise NotFound("No such profile.", code="profile_not_found")
        profiles = frozenset({profile_id})
    page = container.transparency.accesses_for(
        session,
        household_id=reader.household_id,
        profile_ids=profiles,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return AccessPageOut(
        accesses=[AccessOut.of(r) for r in page.records],
        next_cursor=page.next_cursor,
        notice_url=PAGE,
    )


@router.get("/api/v1/notices/staff-access")
def staff_access_notice(session: DbSession, container: AppContainer) -> dict[str, Any]:
    """The staff-access notice in force, as structured data: the roles, what each can
    see, the purposes and their conditions, how long records are kept (R9)."""
    notice = service.publish_notice(session, container.staff_access, now=container.clock.now())
    return notice.document


@router.get("/api/v1/notices/staff-access/versions", response_model=list[NoticeVersionOut])
def staff_access_notice_versions(
    session: DbSession, container: AppContainer
) -> list[NoticeVersionOut]:
    """Every published version of the notice, newest first (R9); what was published is
    listed even while the policy in force cannot be published (the notice says why)."""
    with contextlib.suppress(ConfigurationError):
        service.publish_notice(session, container.staff_access, now=container.clock.now())
    return [
        NoticeVersionOut(version=v, published_at=at, policy_sha256=sha, url=f"{PAGE}/versions/{v}")
        for v, at, sha in service.published_versions(session)
    ]


@router.get("/api/v1/notices/staff-access/versions/{version}")
def staff_access_notice_version(version: int, session: DbSession) -> dict[str, Any]:
    """One published version, as it was published; 404 `notice_version_not_found`."""
    return service.published_notice(session, version=version).document


@router.get(PAGE, response_class=HTMLResponse, include_in_schema=False)
def staff_access_notice_page(session: DbSession, container: AppContainer) -> HTMLResponse:
    notice = service.publish_notice(session, container.staff_access, now=container.clock.now())
    return HTMLResponse(notice.html, headers=_NOTICE_HEADERS)


@router.get(PAGE + "/versions/{version}", response_class=HTMLResponse, include_in_schema=False)
def staff_access_notice_version_page(version: int, session: DbSession) -> HTMLResponse:
    return HTMLResponse(
        service.published_notice(session, version=version).html, headers=_NOTICE_HEADERS
    )
