"""Routes of erasure: a customer's requests, an officer's, their status and receipts.

A request answers 202 once its keys are destroyed: from that answer on, the data is
unreadable (S6); the rest of the job runs in a worker. The answer is the request's
confirmation (S8: within 10 business days, here at once). Every adult of the household
sees the requests for a child's profile, for the household and by the privacy office,
with who asked (`erasure.announce`). Obligations: C6 (a parent has a child's data
deleted), C10 (account closure), A8, S7, S8.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from tutela.core.errors import Forbidden, NotFound
from tutela.deps import AppContainer, CurrentPrincipal, CurrentStaff, DbSession
from tutela.erasure import announce, copies, receipts
from tutela.erasure.jobs import OPEN
from tutela.erasure.models import ErasureRequest, RequesterKind, RequestStatus, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import AccountRole, Profile, ProfileKind
from tutela.identity.service import Principal, StaffPrincipal
from tutela.vault import service as vault
from tutela.vault.models import ItemKind, MediaItem

router = APIRouter(prefix="/api/v1", tags=["erasure"])
IDEMPOTENCY_KEY = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
MAX_SELECTION = 500
"""Items one request may name one by one (a page of the console's list is far fewer)."""


class ErasureIn(BaseModel):
    scope: Literal["item", "items", "profile", "household"]
    profile_id: uuid.UUID | None = None
    item_id: uuid.UUID | None = None
    kinds: list[ItemKind] = Field(default_factory=list, max_length=6)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    item_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_SELECTION)
    """A selection of the profile's items (scope `items`): each one must be the profile's."""


class OfficerErasureIn(ErasureIn):
    household_id: uuid.UUID


class UnreadableOut(BaseModel):
    """How far the data is gone (S6, A8): never more than was verified."""

    live_stores_at: datetime | None
    every_copy_by: datetime | None
    every_copy_at: datetime | None
    statement: str


class ErasureOut(BaseModel):
    id: uuid.UUID
    scope: str
    status: str
    step: str
    requested_by: str
    """The requester's kind: adult, guardian, account_closure, privacy_officer, a rule."""
    asked_by: str
    """Who asked, in words: "you", the adult's name, "Tutela's privacy office", a rule."""
    asked_by_you: bool
    requested_at: datetime
    confirmed_at: datetime | None
    confirm_by: datetime
    complete_by: datetime
    completed_at: datetime | None
    receipt_url: str | None
    unreadable: UnreadableOut

    @classmethod
    def of(
        cls, row: ErasureRequest, *, asked_by: str | None = None, by_you: bool = False
    ) -> ErasureOut:
        unreadable = copies.of_row(row)
        return cls(
            id=row.id,
            scope=row.scope_kind,
            status=row.status,
            step=row.step,
            requested_by=row.requester_kind,
            asked_by=asked_by or announce.asked_by_kind(row.requester_kind),
            asked_by_you=by_you,
            requested_at=row.requested_at,
            confirmed_at=row.confirmed_at,
            confirm_by=row.confirm_by,
            complete_by=row.complete_by,
            completed_at=row.completed_at,
            receipt_url=f"/api/v1/receipts/{row.id}" if row.receipt else None,
            unreadable=UnreadableOut(
                live_stores_at=unreadable.live_stores_at,
                every_copy_by=unreadable.every_copy_by,
                every_copy_at=unreadable.every_copy_at,
                statement=unreadable.statement,
            ),
        )

    @classmethod
    def seen(cls, view: announce.HomeRequest) -> ErasureOut:
        return cls.of(view.row, asked_by=view.asked_by, by_you=view.by_you)


def _scope(payload: ErasureIn, household_id: uuid.UUID) -> Scope:
    return Scope(
        kind=ScopeKind(payload.scope),
        household_id=household_id,
        profile_id=payload.profile_id,
        item_id=payload.item_id,
        kinds=tuple(k.value for k in payload.kinds),
        since=payload.since,
        until=payload.until,
        item_ids=tuple(dict.fromkeys(payload.item_ids)),
    )


def _customer_requester(
    session: Any, principal: Principal, scope: Scope, visible: set[uuid.UUID]
) -> Requester:
    """An adult erases their own data, a guardian their child's, an owner the household."""
    ref = f"account:{principal.account_id}"
    if scope.kind is ScopeKind.HOUSEHOLD:
        if principal.role != AccountRole.OWNER:
            raise Forbidden("Only the household's owner can close it.", code="owner_only")
        return Requester(RequesterKind.ACCOUNT_CLOSURE, ref)
    profile_id = scope.profile_id
    if scope.kind is ScopeKind.ITEM:
        item = session.get(MediaItem, (principal.household_id, scope.item_id))
        profile_id = item.profile_id if item is not None else None
    if profile_id is None or profile_id not in visible:
        # Another household's ids, or a profile this account may not see: not found.
        raise NotFound("No such profile or item.", code="not_found")
    if scope.item_ids and vault.live_items_of(
        session,
        household_id=principal.household_id,
        profile_id=profile_id,
        item_ids=scope.item_ids,
    ) != len(scope.item_ids):
        # One id of another profile or household (or already erased) refuses them all:
        # nothing is started, and which one it was is not said.
        raise NotFound("No such profile or item.", code="not_found")
    if profile_id == principal.profile_id:
        return Requester(RequesterKind.ADULT, ref)
    profile = session.get(Profile, (principal.household_id, profile_id))
    if profile is None or profile.kind != ProfileKind.CHILD:
        raise NotFound("No such profile or item.", code="not_found")
    return Requester(RequesterKind.GUARDIAN, ref)


def _start(
    container: AppContainer, scope: Scope, requester: Requester, key: str | None
) -> ErasureRequest:
    return container.erasure.start(scope, requester, idempotency_key=key, hold=container.hold)


@router.post("/erasures", status_code=202, response_model=ErasureOut)
def request_erasure(
    payload: ErasureIn,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    idempotency_key: IDEMPOTENCY_KEY = None,
) -> ErasureOut:
    """Erase one item, some of a profile's items, a child's profile, or the household.

    `items` narrows by kinds, a range (`since`, `until`) or a selection (`item_ids`, up
    to 500, every one the profile's: one that is not answers 404 and starts nothing);
    without any of them it is every kind of the profile's items up to now: an adult's
    "erase everything about me" (their account stays). Anything but a single
    item (`items`, `profile`, `household`) needs a recent second factor (step-up, C7).
    A child's profile or the household is announced to every adult of the household.
    """
    scope = _scope(payload, principal.household_id)
    if idempotency_key:
        # A retry after the erasure took effect must still find its first answer.
        ref = f"account:{principal.account_id}"
        earlier = container.erasure.idempotent(ref, idempotency_key, scope)
        if earlier is not None:
            return ErasureOut.of(earlier, asked_by=announce.YOU, by_you=True)
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    requester = _customer_requester(session, principal, scope, visible)
    if scope.kind is not ScopeKind.ITEM:
        # Bulk and irreversible: a fresh second factor first (C7).
        container.gate.require_step_up(session, principal, now=container.clock.now())
    session.close()
    started = _start(container, scope, requester, idempotency_key)
    background.add_task(container.deliver_notices)  # the household's notices, if any
    return ErasureOut.of(started, asked_by=announce.YOU, by_you=True)


@router.get("/erasures", response_model=list[ErasureOut])
def list_erasures(
    principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> list[ErasureOut]:
    """The requests this adult made, and the household's: a child's profile, the
    household, the privacy office's. Another adult's erasure of their own data is theirs."""
    views = announce.household_requests(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        account_id=principal.account_id,
    )
    return [ErasureOut.seen(v) for v in views]


@router.get("/erasures/{request_id}", response_model=ErasureOut)
def get_erasure(
    request_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> ErasureOut:
    view = announce.household_request(
        session,
        container.vault.keys,
        household_id=principal.household_id,
        account_id=principal.account_id,
        request_id=request_id,
    )
    return ErasureOut.seen(view)


@router.get("/receipts/public-key", response_class=Response)
def receipt_public_key(container: AppContainer) -> Response:
    """The Ed25519 public key that verifies every receipt (PEM)."""
    pem = receipts.public_key_pem(container.vault.keys, now=container.clock.now())
    return Response(pem, media_type="application/x-pem-file")


@router.get("/receipts/{request_id}")
def get_receipt(request_id: uuid.UUID, session: DbSession) -> Response:
    """A completed request's signed receipt. It holds no personal data (the subject is a
    salted hash), so whoever holds the request's id may fetch it: after a household's
    closure nobody can sign in to ask for it."""
    row = session.get(ErasureRequest, request_id)
    if row is None or row.receipt is None:
        raise NotFound("No receipt for that request (yet).", code="receipt_not_found")
    return Response(
        json.dumps(json.loads(row.receipt), indent=2, sort_keys=True),
        media_type="application/json",
    )


@router.post("/staff/erasures", status_code=202, response_model=ErasureOut)
def officer_erasure(
    payload: OfficerErasureIn,
    staff: CurrentStaff,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    idempotency_key: IDEMPOTENCY_KEY = None,
) -> ErasureOut:
    """A privacy officer's request on a customer's behalf (a request by mail, a regulator's
    order). Needs the privacy_officer role and a recent second factor. Every adult of the
    household is told, right after the answer."""
    if "privacy_officer" not in staff.roles:
        raise Forbidden("Only privacy officers request erasures.", code="privacy_officer_only")
    container.gate.require_step_up(session, staff, now=container.clock.now())
    session.close()
    scope = _scope(payload, payload.household_id)
    requester = Requester(RequesterKind.PRIVACY_OFFICER, f"staff:{staff.staff_id}")
    if idempotency_key:
        earlier = container.erasure.idempotent(requester.ref, idempotency_key, scope)
        if earlier is not None:
            return ErasureOut.of(earlier)
    answer = ErasureOut.of(_start(container, scope, requester, idempotency_key))
    background.add_task(container.deliver_notices)  # the household's adults are told
    return answer


class StaffErasureOut(ErasureOut):
    """What an officer sees of a request: also its household (None once a closure
    completed), why it last failed (an error class or `remnants_found`, never data) and
    when its deadline warning went out."""

    household_id: uuid.UUID | None
    last_error: str | None
    warned_at: datetime | None

    @classmethod
    def for_officer(cls, row: ErasureRequest) -> StaffErasureOut:
        return cls(
            **ErasureOut.of(row).model_dump(),
            household_id=row.household_id,
            last_error=row.last_error,
            warned_at=row.warned_at,
        )


def _officer(staff: StaffPrincipal) -> None:
    if "privacy_officer" not in staff.roles:
        raise Forbidden("Only privacy officers handle erasures.", code="privacy_officer_only")


@router.get("/staff/erasures", response_model=list[StaffErasureOut])
def officer_erasures(
    staff: CurrentStaff,
    session: DbSession,
    status: Annotated[
        Literal["open", "pending", "running", "blocked", "failed", "completed"], Query()
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> list[StaffErasureOut]:
    """Requests of every household, newest first: by default the open ones (pending,
    running, blocked, failed), with their deadlines (S7, S8). Privacy officers only."""
    _officer(staff)
    wanted = OPEN if status == "open" else (RequestStatus(status),)
    rows = session.scalars(
        select(ErasureRequest)
        .where(ErasureRequest.status.in_(wanted))
        .order_by(ErasureRequest.requested_at.desc())
        .limit(limit)
    )
    return [StaffErasureOut.for_officer(r) for r in rows]


@router.post("/staff/erasures/{request_id}/retry", status_code=202, response_model=StaffErasureOut)
def officer_retry(
    request_id: uuid.UUID, staff: CurrentStaff, session: DbSession, container: AppContainer
) -> StaffErasureOut:
    """Run a failed (or blocked) request again once its fault is fixed: pending, due now,
    from the step that failed (from `keys` after an unclean remnant check), its original
    deadline kept; audited with the officer's name. Privacy officers, with step-up."""
    _officer(staff)
    container.gate.require_step_up(session, staff, now=container.clock.now())
    session.close()
    return StaffErasureOut.for_officer(
        container.erasure.retry(request_id, by=f"staff:{staff.staff_id}")
    )
