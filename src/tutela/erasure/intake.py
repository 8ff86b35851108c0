"""Erasure requests: recording one (deadlines, idempotency, legal holds) and starting it.

A person's request is answered only once its keys are destroyed (`start`), so the data
is unreadable by the time they read the answer (S6). Obligations: C6, C10, S7, S8.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, NotFound, ServiceUnavailable
from tutela.core.ids import uuid7
from tutela.erasure import announce, deadlines, recovery, steps
from tutela.erasure.jobs import chunks
from tutela.erasure.models import ErasureRequest, RequestStatus, ScopeKind, Step
from tutela.erasure.scope import Requester, Scope, digest
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
    hold: Callable[[uuid.UUID, uuid.UUID | None, datetime], object | None] | None = None,
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
        if hold is not None and hold(scope.household_id, held_profile, now) is not None:
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
        if scope.item_ids:
            # Named items leave every listing (and the next sweep's selection) with
            # the request itself, not only once a worker reaches `mark`.
            for part in chunks(scope.item_ids):
                session.execute(
                    update(MediaItem)
                    .where(
                        MediaItem.household_id == scope.household_id,
                        MediaItem.id.in_(part),
                    )
                    .values(state=ItemState.UNDER_ERASURE)
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
    hold: Callable[[uuid.UUID, uuid.UUID | None, datetime], object | None] | None = None,
) -> ErasureRequest:
    """Request an erasure and destroy its keys before returning (S6): what a person's
    request does, so the data is unreadable by the time they see the answer."""
    row = engine.request(scope, requester, idempotency_key=idempotency_key, hold=hold, wake=False)
    if row.step not in (Step.MARK, Step.KEYS):
        return row
    keys_gone = False
    if engine.run_request(row.id, until=Step.KEYS) is None:
        # Another worker holds the job (it may be anywhere in mark or keys): both
        # steps are idempotent, so do them here too rather than answer before the
        # keys are gone.
        job = engine.load(row.id)
        try:
            steps.mark(engine, job)
            steps.destroy_keys(engine, job)
            keys_gone = True
        except Exception as exc:
            log.warning("erasure keys not destroyed inline: %s", type(exc).__name__)
    with engine.stores.session() as session:
        fresh = session.get(ErasureRequest, row.id)
        assert fresh is not None
    if not keys_gone and fresh.step in (Step.MARK, Step.KEYS):
        # The keys could not be destroyed just now (a store failed): never answer as
        # if they were. The job stays queued; a worker finishes it.
        raise ServiceUnavailable(
            "The erasure is queued but could not start yet; it will run shortly.",
            code="erasure_queued",
            request_id=str(fresh.id),
        )
    return fresh


def check_scope(session: Session, scope: Scope) -> uuid.UUID | None:
    """Refuse a scope that names nothing of the household; return the profile a
    legal hold would be looked up for (None: the whole household)."""
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
        item = session.get(MediaItem, (scope.household_id, scope.item_id))
        if item is None:
            raise NotFound("No such item.", code="item_not_found")
        return item.profile_id
    return scope.profile_id
