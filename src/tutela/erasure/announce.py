"""Telling the household: who is told of an erasure, and which requests every adult sees.

Erasing a child's profile, closing a household, and any erasure by Tutela's privacy office
concern everyone in the home: every adult with an account is sent a notice when the
request is recorded, and sees the request in the API and the console (C6, S7). A
guardian's erasure of some of a child's items (one, a selection, some kinds, a time range)
is confirmed to that guardian alone. An adult's erasure of their own items stays theirs
alone. The notice says what was erased in general words, who asked, when, and where the
receipt will be; it never carries the erased subject's personal data (a child's name in
it would be a copy outliving the erasure: A5).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from tutela.core.errors import KeyUnavailable, NotFound
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import Account, Profile, ProfileKind
from tutela.identity.owners import Owner
from tutela.notices.service import ERASED_WHAT, NoticeKind, enqueue
from tutela.vault.keystore import KeyStore

YOU: Final = "you"
AN_ADULT: Final = "an adult of your home"
_BY_KIND: Final[dict[str, str]] = {
    RequesterKind.PRIVACY_OFFICER.value: "Tutela's privacy office",
    RequesterKind.RETENTION.value: "a retention rule",
    RequesterKind.AUTO_DELETE.value: "automatic deletion",
    RequesterKind.INACTIVE_CHILD.value: "the rule for inactive child profiles (a retention rule)",
    RequesterKind.RESTORE_CHECK.value: "a check after a backup was restored",
    RequesterKind.EXPORT_EXPIRY.value: "the expiry of a download link",
}
_SHARED_SCOPES: Final = (ScopeKind.PROFILE.value, ScopeKind.HOUSEHOLD.value)
NOTICE_KINDS: Final = (NoticeKind.ERASURE_IN_HOME,)
"""The notices a household's closure delivers before its keys go."""
_CHILD_REQUESTERS: Final = (RequesterKind.GUARDIAN.value, RequesterKind.INACTIVE_CHILD.value)


@dataclass(frozen=True)
class HomeRequest:
    """A request as an adult of the household sees it: the row, what it erases and who
    asked."""

    row: ErasureRequest
    asked_by: str
    """"you", the requesting adult's name, "Tutela's privacy office", or a rule."""
    by_you: bool

    @property
    def what(self) -> str:
        """What it erases, in the notice's general words (the scope itself is sealed,
        then wiped: a profile is a child's when a guardian or the inactive-child rule
        asked)."""
        code = self.row.scope_kind
        if code == ScopeKind.PROFILE.value and self.row.requester_kind in _CHILD_REQUESTERS:
            code = "child_profile"
        return ERASED_WHAT.get(code, code)


def shown_to_household(scope_kind: str, requester_kind: str) -> bool:
    """Every adult sees requests for a (child's) profile, the household, and the privacy
    office's requests; other requests only the adult who made them."""
    return scope_kind in _SHARED_SCOPES or requester_kind == RequesterKind.PRIVACY_OFFICER


def tells_household(scope_kind: str, requester_kind: str) -> bool:
    """Who is told is who sees it; a re-erasure after a restore tells nobody again."""
    return requester_kind != RequesterKind.RESTORE_CHECK and shown_to_household(
        scope_kind, requester_kind
    )


def what_code(session: Session, scope: Scope) -> str:
    """The general words (`notices.service.ERASED_WHAT`) for what `scope` erases."""
    if scope.kind is ScopeKind.PROFILE:
        profile = session.get(Profile, (scope.household_id, scope.profile_id))
        return "child_profile" if profile and profile.kind == ProfileKind.CHILD else "profile"
    return scope.kind.value


def _account_id(ref: str | None) -> uuid.UUID | None:
    if ref is None or not ref.startswith("account:"):
        return None
    try:
        return uuid.UUID(ref.removeprefix("account:"))
    except ValueError:
        return None


def _name(session: Session, keys: KeyStore, household_id: uuid.UUID, ref: str | None) -> str:
    account_id = _account_id(ref)
    if account_id is None:
        return AN_ADULT
    account = session.get(Account, (household_id, account_id))
    if account is None:
        return AN_ADULT
    profile = session.get(Profile, (household_id, account.profile_id))
    if profile is None:
        return AN_ADULT
    try:
        return households.profile_view(keys, profile).name
    except KeyUnavailable:  # the adult's own profile is being erased with the home
        return AN_ADULT


def asked_by_kind(requester_kind: str) -> str:
    """Who asked, when only the requester's kind is known: a rule or the privacy office
    by name, a customer as "an adult of your home"."""
    return _BY_KIND.get(requester_kind, AN_ADULT)


def asked_by(
    session: Session,
    keys: KeyStore,
    *,
    household_id: uuid.UUID,
    requester_kind: str,
    requested_by: str | None,
    viewer: str | None,
) -> str:
    """Who asked, in words for an adult of the household (`viewer` is their reference)."""
    if requested_by is not None and requested_by == viewer:
        return YOU
    if requester_kind in _BY_KIND:
        return asked_by_kind(requester_kind)
    return _name(session, keys, household_id, requested_by)


def tell_household(
    session: Session,
    keys: KeyStore,
    *,
    request: ErasureRequest,
    scope: Scope,
    requester: Requester,
    origin: str,
    now: datetime,
) -> int:
    """Queue the erasure notice to every adult with an account, in the request's own
    transaction; returns how many were queued (none when the household is not told)."""
    if scope.household_id is None or not tells_household(scope.kind.value, requester.kind.value):
        return 0  # a batch (a sweep's, a disgorgement's) is no one household's request
    accounts = session.scalars(
        select(Account).where(Account.household_id == scope.household_id).order_by(Account.id)
    ).all()
    what = what_code(session, scope)
    others = asked_by(
        session,
        keys,
        household_id=scope.household_id,
        requester_kind=requester.kind.value,
        requested_by=requester.ref,
        viewer=None,
    )
    for account in accounts:
        enqueue(
            session,
            keys,
            kind=NoticeKind.ERASURE_IN_HOME,
            owner=Owner.account(account.household_id, account.id, account.profile_id),
            params={
                "at": now.isoformat(),
                "who": YOU if requester.ref == f"account:{account.id}" else others,
                "what": what,
                "request": str(request.id),
                "link": f"{origin}/api/v1/receipts/{request.id}",
            },
            now=now,
        )
    return len(accounts)


def own_what_code(scope: Scope) -> str:
    """The general words for what a guardian's request erases: one
    item, a selection, some kinds, a time range, or everything of the profile. `scope` is
    the request as asked (before "up to now" was added to it)."""
    if scope.kind is not ScopeKind.ITEMS:
        return scope.kind.value
    if scope.item_ids:
        return "selection"
    if scope.since is not None or scope.until is not None:
        return "range"
    return "kinds" if scope.kinds else "all_items"


def confirm_to_requester(
    session: Session,
    keys: KeyStore,
    *,
    request: ErasureRequest,
    scope: Scope,
    requester: Requester,
    origin: str,
    now: datetime,
) -> bool:
    """Queue the confirmation of a guardian's request for a child's items to them, in the
    request's transaction (C6, S8: confirmed in writing, with where the receipt will be).

    Requests the whole household is told of already reach the guardian that way (as
    "you"); an adult's erasure of their own items, rules, officers and restores confirm to
    nobody (an adult sees their own requests on the privacy page). The notice names no
    profile and no item: a child's name in it would outlive the child's erasure (A5).
    """
    if requester.kind is not RequesterKind.GUARDIAN or scope.household_id is None:
        return False
    if tells_household(scope.kind.value, requester.kind.value):
        return False
    account_id = _account_id(requester.ref)
    account = session.get(Account, (scope.household_id, account_id)) if account_id else None
    if account is None:
        return False
    enqueue(
        session,
        keys,
        kind=NoticeKind.ERASURE_CONFIRMED,
        owner=Owner.account(account.household_id, account.id, account.profile_id),
        params={
            "at": now.isoformat(),
            "what": own_what_code(scope),
            "request": str(request.id),
            "link": f"{origin}/api/v1/receipts/{request.id}",
        },
        now=now,
    )
    return True


def tell_completed(
    session: Session, keys: KeyStore, *, request: ErasureRequest, origin: str, now: datetime
) -> bool:
    """Queue the news that a guardian's request for some of a child's items is complete,
    with its signed receipt's address, to that guardian (C6, A8: deleted only once
    verified); what the household was told of already named where its receipt would be.
    The caller commits."""
    if request.requester_kind != RequesterKind.GUARDIAN.value or request.household_id is None:
        return False
    if tells_household(request.scope_kind, request.requester_kind):
        return False
    account_id = _account_id(request.requested_by)
    account = session.get(Account, (request.household_id, account_id)) if account_id else None
    if account is None:
        return False
    enqueue(
        session,
        keys,
        kind=NoticeKind.ERASURE_COMPLETED,
        owner=Owner.account(account.household_id, account.id, account.profile_id),
        params={
            "at": now.isoformat(),
            "request": str(request.id),
            "link": f"{origin}/api/v1/receipts/{request.id}",
        },
        now=now,
    )
    return True


def _visible(household_id: uuid.UUID, viewer: str) -> Sequence[ColumnElement[bool]]:
    return (
        ErasureRequest.household_id == household_id,
        or_(
            ErasureRequest.requested_by == viewer,
            ErasureRequest.scope_kind.in_(_SHARED_SCOPES),
            ErasureRequest.requester_kind == RequesterKind.PRIVACY_OFFICER.value,
        ),
    )


def _views(
    session: Session,
    keys: KeyStore,
    household_id: uuid.UUID,
    viewer: str,
    rows: Iterable[ErasureRequest],
) -> list[HomeRequest]:
    names: dict[tuple[str, str | None], str] = {}
    views = []
    for row in rows:
        who = (row.requester_kind, row.requested_by)
        if who not in names:
            names[who] = asked_by(
                session,
                keys,
                household_id=household_id,
                requester_kind=row.requester_kind,
                requested_by=row.requested_by,
                viewer=viewer,
            )
        views.append(HomeRequest(row=row, asked_by=names[who], by_you=row.requested_by == viewer))
    return views


def household_requests(
    session: Session,
    keys: KeyStore,
    *,
    household_id: uuid.UUID,
    account_id: uuid.UUID,
    limit: int = 200,
) -> list[HomeRequest]:
    """The requests this adult sees, newest first: their own, and the household's."""
    viewer = f"account:{account_id}"
    rows = session.scalars(
        select(ErasureRequest)
        .where(*_visible(household_id, viewer))
        .order_by(ErasureRequest.requested_at.desc())
        .limit(limit)
    ).all()
    return _views(session, keys, household_id, viewer, rows)


def household_request(
    session: Session,
    keys: KeyStore,
    *,
    household_id: uuid.UUID,
    account_id: uuid.UUID,
    request_id: uuid.UUID,
) -> HomeRequest:
    """One request this adult may see; another's own request answers not found."""
    viewer = f"account:{account_id}"
    row = session.scalar(
        select(ErasureRequest).where(
            ErasureRequest.id == request_id, *_visible(household_id, viewer)
        )
    )
    if row is None:
        raise NotFound("No such erasure request.", code="erasure_not_found")
    return _views(session, keys, household_id, viewer, [row])[0]
