"""Erasure requests: recording one (deadlines, idempotency, legal holds) and starting it.

A person's request is answered only once its keys are destroyed (`start`), so the data
is unreadable by the time they read the answer (S6). Obligations: C6, C10, S7, S8.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, NotFound, ServiceUnavailable
from tutela.core.ids import uuid7
from tutela.db.idsets import any_of, pair_in
from tutela.erasure import announce, deadlines, recovery
from tutela.erasure.jobs import chunks
from tutela.erasure.models import ErasureRequest, RequestStatus, ScopeKind, Step
from tutela.erasure.scope import BatchOutcome, Member, Requester, Scope, digest
from tutela.households.models import Account, Household, Profile
from tutela.vault.models import ItemState, MediaItem

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine

log = logging.getLogger("tutela.erasure")
Hold = Callable[[uuid.UUID, uuid.UUID | None, datetime], object | None]


def request(
    engine: ErasureEngine,
    scope: Scope,
    requester: Requester,
    *,
    idempotency_key: str | None = None,
    hold: Hold | None = None,
    deadline: datetime | None = None,
    wake: bool = True,
) -> ErasureRequest:
    """Record an erasure request (it is confirmed by being answered: S8's 10 days).

    Its commit wakes the workers (`erasure/wake.py`), unless `wake` is False: `start`
    runs the first steps itself and wakes them when it hands the job on, so that no
    worker races it for the job meanwhile.

    The same idempotency key from the same requester answers the first request; an
    identical scope already being erased answers that request, and one whose erasure
    failed is run again and answers (`recovery.reopen`): looked up before the scope is
    checked, since a failed closure may have removed the household's rows already. A
    child's profile, the household, or a privacy officer's request is announced to every
    adult of the household in the same transaction (`announce.tell_household`).
    """
    now = engine.clock.now()
    asked_scope, asked = scope, asked_digest(engine, scope)
    if scope.kind is ScopeKind.ITEMS and scope.until is None and not scope.item_ids:
        # "All voice" means all voice recorded up to the request.
        scope = Scope(
            kind=scope.kind,
            household_id=scope.household_id,
            profile_id=scope.profile_id,
            kinds=scope.kinds,
            since=scope.since,
            until=now,
        )
    idem = idem_digest(engine, requester.ref, idempotency_key) if idempotency_key else None
    subject = digest(engine.keys, "scope", hashlib.sha256(scope.canonical()).digest(), now=now)
    if idempotency_key:
        existing = idempotent(engine, requester.ref, idempotency_key, asked_scope)
        if existing is not None:
            return existing
    with engine.stores.session() as session:
        running = recovery.reopen(session, subject=subject, asked=asked, by=requester.ref, now=now)
        if running is not None:
            engine.wakeup.announce(session)  # it may be a failed request, run again now
        session.commit()
        if running is not None:
            engine.wakeup.local()
            session.refresh(running)
            return running
        held_profile = check_scope(session, scope)
        # A batch's holds are looked up per member, before it is made (`request_batch`).
        if (
            hold is not None
            and scope.household_id is not None
            and hold(scope.household_id, held_profile, now) is not None
        ):
            raise Conflict(
                "A legal hold suspends deletion of this data for now.", code="legal_hold"
            )
        due = deadlines.deadlines_for(
            now,
            confirm_business_days=engine.settings.erasure_confirm_business_days,
            completion_days=engine.settings.erasure_completion_days,
            warn_fraction=engine.settings.erasure_warn_fraction,
        )
        # GDPR's "one month" is a calendar month: never later than that (S7).
        limit = min(deadlines.one_month_after(now), deadline or due.complete_by)
        if limit < due.complete_by:
            due = deadlines.Deadlines(
                confirm_by=due.confirm_by,
                complete_by=limit,
                warn_at=now + (limit - now) * engine.settings.erasure_warn_fraction,
            )
        row = ErasureRequest(
            id=uuid7(),
            household_id=scope.household_id,
            scope_kind=scope.kind.value,
            scope_sealed=engine.seal(scope.canonical(), "scope", now=now),
            subject_digest=subject,
            asked_digest=asked,
            requester_kind=requester.kind.value,
            requested_by=requester.ref[:80],
            idempotency_digest=idem,
            status=RequestStatus.PENDING,
            step=Step.MARK,
            step_times="{}",
            counts="{}",
            attempts=0,
            verify_failures=0,
            next_run_at=now,
            requested_at=now,
            confirmed_at=now,
            confirm_by=due.confirm_by,
            complete_by=due.complete_by,
            warn_at=due.warn_at,
        )
        session.add(row)
        named = _named_items(scope, postgresql=engine.postgresql)
        if named is not None:
            # Named items leave every listing (and the next sweep's selection) with
            # the request itself, not only once a worker reaches `mark`.
            session.execute(
                update(MediaItem)
                .where(named)
                .values(state=ItemState.UNDER_ERASURE)
                .execution_options(synchronize_session=False)
            )
        record(
            session,
            tag=AuditTag.ERASURE_REQUESTED,
            actor=requester.ref[:80],
            now=now,
            household_id=scope.household_id,
            subject=f"erasure:{row.id}",
        )
        announce.tell_household(
            session,
            engine.keys,
            request=row,
            scope=scope,
            requester=requester,
            origin=engine.settings.origin,
            now=now,
        )
        announce.confirm_to_requester(
            session,
            engine.keys,
            request=row,
            scope=asked_scope,
            requester=requester,
            origin=engine.settings.origin,
            now=now,
        )
        try:
            if wake:
                engine.wakeup.announce(session)  # a worker starts at the commit (wake.py)
            session.commit()
        except IntegrityError:
            session.rollback()
            if idem is None:
                raise
            existing = session.scalar(
                select(ErasureRequest).where(ErasureRequest.idempotency_digest == idem)
            )
            assert existing is not None
            return existing
        if wake:
            engine.wakeup.local()
        return row


def _named_items(scope: Scope, *, postgresql: bool) -> Any:
    if scope.members:
        pairs = [(m.household_id, m.item_id) for m in scope.members]
        return pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=postgresql)
    if scope.item_ids:
        # Only the scope's own profile's items: an id of another profile is never hidden
        # by a request that will not erase it (`selection.primary` names the same).
        return (
            (MediaItem.household_id == scope.household_id)
            & (MediaItem.profile_id == scope.profile_id)
            & any_of(MediaItem.id, scope.item_ids, postgresql=postgresql)
        )
    return None


def request_batch(
    engine: ErasureEngine,
    members: Sequence[Member],
    requester: Requester,
    *,
    hold: Hold | None = None,
) -> BatchOutcome:
    """Request the erasure of items named one by one, across profiles and households, as
    batch jobs of up to `erasure_batch_size` items (A6, C9): what a retention sweep, an
    automatic-deletion pass or a disgorgement asks for.

    A member whose household and profile a legal hold covers is left out and counted
    (`held`); the hold is looked up once per profile. Each batch is one request, with one
    receipt that counts each subject apart.
    """
    now = engine.clock.now()
    outcome = BatchOutcome()
    held: dict[tuple[uuid.UUID, uuid.UUID], bool] = {}
    kept: list[Member] = []
    for m in sorted(set(members)):
        key = (m.household_id, m.profile_id)
        if key not in held:
            held[key] = hold is not None and hold(m.household_id, m.profile_id, now) is not None
        if held[key]:
            outcome.held += 1
        else:
            kept.append(m)
    for part in chunks(kept, engine.settings.erasure_batch_size):
        row = request(engine, Scope.batch(part), requester)
        if row.id not in outcome.requests:
            outcome.requests.append(row.id)
    return outcome


def idem_digest(engine: ErasureEngine, ref: str, idempotency_key: str) -> str:
    """Keyed, so a stored digest cannot confirm a guessed key (rules use ids in theirs)."""
    return digest(
        engine.keys, "idempotency", f"{ref}\x00{idempotency_key}".encode(), now=engine.clock.now()
    )


def asked_digest(engine: ErasureEngine, scope: Scope) -> str:
    return digest(
        engine.keys, "asked", hashlib.sha256(scope.canonical()).digest(), now=engine.clock.now()
    )


def idempotent(
    engine: ErasureEngine, ref: str, idempotency_key: str, scope: Scope
) -> ErasureRequest | None:
    """The request this requester made with this key, if any.

    Looked up before anything else, so a retry after the erasure took effect (the
    item gone, the profile hidden) still answers the first request. The same key
    with another scope is refused, before and after completion.
    """
    idem = idem_digest(engine, ref, idempotency_key)
    with engine.stores.session() as session:
        existing = session.scalar(
            select(ErasureRequest).where(ErasureRequest.idempotency_digest == idem)
        )
    if existing is None:
        return None
    if existing.asked_digest != asked_digest(engine, scope):
        raise Conflict(
            "This idempotency key was used for another request.",
            code="idempotency_key_reused",
        )
    return existing


def start(
    engine: ErasureEngine,
    scope: Scope,
    requester: Requester,
    *,
    idempotency_key: str | None = None,
    hold: Hold | None = None,
) -> ErasureRequest:
    """Request an erasure and destroy its keys before returning (S6): what a person's
    request does, so the data is unreadable by the time they see the answer."""
    row = engine.request(scope, requester, idempotency_key=idempotency_key, hold=hold, wake=False)
    if row.step not in (Step.MARK, Step.KEYS):
        return row
    if engine.run_request(row.id, until=Step.KEYS) is None:
        # Another worker holds the job: it is in mark or keys right now. Wait for it,
        # briefly, rather than answer before the keys are gone.
        _wait_past_keys(engine, row.id)
    with engine.stores.session() as session:
        fresh = session.get(ErasureRequest, row.id)
        assert fresh is not None
    if fresh.step in (Step.MARK, Step.KEYS):
        # The keys could not be destroyed just now (a store failed, or the worker that
        # holds the job stalled): never answer as if they were. The job stays queued; a
        # worker finishes it.
        raise ServiceUnavailable(
            "The erasure is queued but could not start yet; it will run shortly.",
            code="erasure_queued",
            request_id=str(fresh.id),
        )
    return fresh


START_WAIT_SECONDS = 5.0


def _wait_past_keys(engine: ErasureEngine, request_id: uuid.UUID) -> None:
    deadline = time.monotonic() + START_WAIT_SECONDS
    pause = 0.005
    while time.monotonic() < deadline:
        with engine.stores.session() as session:
            step = session.scalar(
                select(ErasureRequest.step).where(ErasureRequest.id == request_id)
            )
        if step not in (Step.MARK, Step.KEYS):
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def check_scope(session: Session, scope: Scope) -> uuid.UUID | None:
    """Refuse a scope that names nothing of the household; return the profile a
    legal hold would be looked up for (None: the whole household)."""
    if scope.household_id is None:
        return None  # a batch: its members are found (or not) by `mark`
    household = session.get(Household, scope.household_id)
    if household is None:
        raise NotFound("No such household.", code="household_not_found")
    if scope.profile_id is not None:
        profile = session.get(Profile, (scope.household_id, scope.profile_id))
        if profile is None:
            raise NotFound("No such profile.", code="profile_not_found")
    if scope.kind is ScopeKind.PROFILE:
        has_account = session.scalar(
            select(func.count())
            .select_from(Account)
            .where(
                Account.household_id == scope.household_id,
                Account.profile_id == scope.profile_id,
            )
        )
        if has_account:
            raise Conflict(
                "This profile signs in to an account: close the account (household "
                "scope), or erase all its items (items scope without kinds) instead.",
                code="profile_has_account",
            )
    if scope.kind is ScopeKind.ITEM:
        item = session.get(MediaItem, (scope.hh, scope.item_id))
        if item is None:
            raise NotFound("No such item.", code="item_not_found")
        return item.profile_id
    return scope.profile_id
