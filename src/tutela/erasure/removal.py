"""The erasure steps that remove the ciphertext and the rows: blobs, derived artifacts,
rows (A5, C1, C10).

They run after `keys`, so nothing they remove can be read any more; they work on the ids
the job carries (no scope query), with one statement per table, and each records its
completion in its own transaction. Derived artifacts go before the items they came from;
a profile's or a household's item keys go with the rows.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Table, case, delete, or_, update
from sqlalchemy.orm import Session

from tutela.audit.models import AuditEvent
from tutela.db.base import Base
from tutela.db.engine import purge_journal
from tutela.db.idsets import pair_in
from tutela.erasure import packages, selection
from tutela.erasure.jobs import MAX_FINGERPRINT_IDS, RECORD_TABLES, Job
from tutela.erasure.models import ErasureRequest, ScopeKind, Step
from tutela.erasure.scope import Scope
from tutela.households.models import Household, Profile
from tutela.notices.models import OutboxMessage
from tutela.vault.models import MediaItem

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine


def blobs(engine: ErasureEngine, job: Job) -> str:
    scope, store = job.scope, engine.vault.blobs
    if scope.kind is ScopeKind.HOUSEHOLD:
        # The whole prefix: orphans of crashed uploads go with it.
        store.delete_prefix(f"{scope.hh}/")
    elif scope.kind is ScopeKind.PROFILE:
        store.delete_prefix(f"{scope.hh}/{scope.profile_id}/")
    else:
        # One batched delete (S3 DeleteObjects, a thousand keys a call).
        store.delete_many(sorted(set(job.fp.blob_keys)))
    return "next"


def derived(engine: ErasureEngine, job: Job) -> str:
    """Derived artifacts (transcripts, thumbnails) before the items they came from."""
    scope = job.scope
    with engine.stores.session() as session:
        if not engine.leases.advance(job, Step.DERIVED, Step.ROWS, session=session):
            return "lost"
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            named = selection.primary(scope, postgresql=engine.postgresql)
            session.execute(delete(MediaItem).where(named, MediaItem.source_item_id.is_not(None)))
        elif job.fp.members:
            session.execute(
                delete(MediaItem).where(
                    _members(engine, job), MediaItem.source_item_id.is_not(None)
                )
            )
        session.commit()
    return "advanced"


def _members(engine: ErasureEngine, job: Job) -> ColumnElement[bool]:
    return pair_in(
        MediaItem.household_id, MediaItem.id, job.fp.pairs(), postgresql=engine.postgresql
    )


def rows(engine: ErasureEngine, job: Job) -> str:
    scope = job.scope
    if scope.kind is ScopeKind.HOUSEHOLD:
        engine.keys.destroy_item_keys_of(household_id=scope.hh)
    elif scope.kind is ScopeKind.PROFILE:
        engine.keys.destroy_item_keys_of(household_id=scope.hh, profile_id=scope.profile_id)
    erased = "erased:" + job.row.subject_digest[:16]
    with engine.stores.session() as session:
        if not engine.leases.advance(job, Step.ROWS, Step.DOWNSTREAM, session=session):
            return "lost"
        _notices(engine, session, job)
        if scope.kind is ScopeKind.HOUSEHOLD:
            accounts = [f"account:{a}" for a in job.fp.account_ids]
            _household_rows(session, scope.hh, erased, accounts)
        elif scope.kind is ScopeKind.PROFILE:
            _profile_rows(session, scope, erased)
        elif job.fp.members:
            _item_references(engine, session, job)
            session.execute(delete(MediaItem).where(_members(engine, job)))
            packages.strip(
                session,
                job.fp.pairs(),
                request_id=job.row.id,
                now=engine.clock.now(),
                postgresql=engine.postgresql,
            )
        session.commit()
    purge_journal(engine.stores.main)
    return "advanced"


def item_reference_tables() -> list[Table]:
    """Tables keyed by household that name an item in a nullable `item_id` (the record of
    an employee's look, R3): an erased item's id is cleared from them, the record kept."""
    return [
        table
        for table in Base.metadata.sorted_tables
        if table.name != "items"
        and "household_id" in table.c
        and "item_id" in table.c
        and table.c.item_id.nullable
    ]


def _item_references(engine: ErasureEngine, session: Session, job: Job) -> None:
    """What happened stays, not the item: nothing else holds its id once it is erased (A5)."""
    for table in item_reference_tables():
        session.execute(
            update(table)
            .where(
                pair_in(
                    table.c.household_id,
                    table.c.item_id,
                    job.fp.pairs(),
                    postgresql=engine.postgresql,
                )
            )
            .values(item_id=None)
        )


def notices_of(scope: Scope) -> ColumnElement[bool] | None:
    """The outbox rows erased with `scope`: for a household every notice of its accounts,
    for a profile every notice about it (a guardian told the child's name); None for
    items and batches, which no notice names."""
    if scope.kind is ScopeKind.HOUSEHOLD:
        return OutboxMessage.household_id == scope.household_id
    if scope.kind is ScopeKind.PROFILE:
        return (OutboxMessage.household_id == scope.household_id) & (
            OutboxMessage.about_profile_id == scope.profile_id
        )
    return None


def _notices(engine: ErasureEngine, session: Session, job: Job) -> None:
    """Queued and delivered notices of the subject go, then their mailed copies (A5).

    The rows are deleted first: on PostgreSQL the DELETE waits for a worker that holds
    one of them while it mails it (and on SQLite for its write lock), so the copy it
    wrote is there to discard. The copies go before the deletion commits, and their
    references join the fingerprints in the same transaction, so the remnant check can
    ask the mailer whether it still holds any of them.
    """
    which = notices_of(job.scope)
    if which is None:
        return
    gone = [
        str(i)
        for i in session.scalars(delete(OutboxMessage).where(which).returning(OutboxMessage.id))
    ]
    # Copies of notices erased by an earlier run too: one may have come back since.
    engine.notices.discard(sorted(set(gone) | set(job.fp.notices)))
    if gone:
        known = set(job.fp.notices)
        job.fp.notices = [*job.fp.notices, *(i for i in gone if i not in known)][
            :MAX_FINGERPRINT_IDS
        ]
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == job.row.id)
            .values(
                fingerprints_sealed=engine.seal(job.fp.to_bytes(), "fp", now=engine.clock.now())
            )
        )


def _profile_rows(session: Session, scope: Scope, erased: str) -> None:
    hh, pid = scope.hh, scope.profile_id
    session.execute(
        delete(MediaItem).where(MediaItem.household_id == hh, MediaItem.profile_id == pid)
    )
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in ("items", "profiles", "accounts") or "household_id" not in table.c:
            continue
        for column in ("profile_id", "child_profile_id"):
            if column in table.c:
                session.execute(
                    delete(table).where(table.c.household_id == hh, table.c[column] == pid)
                )
    # `profile:<id>` and what names a part of it (`profile:<id>:<purpose>`, a consent).
    ref = f"profile:{pid}"
    session.execute(
        update(AuditEvent)
        .where(
            AuditEvent.household_id == hh,
            or_(
                AuditEvent.subject == ref, AuditEvent.subject.startswith(ref + ":", autoescape=True)
            ),
        )
        .values(subject=erased)
    )
    session.execute(delete(Profile).where(Profile.household_id == hh, Profile.id == pid))


def _household_rows(session: Session, hh: uuid.UUID, erased: str, accounts: list[str]) -> None:
    """Every row of every table keyed by the household, children before parents."""
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in RECORD_TABLES or "household_id" not in table.c:
            continue
        session.execute(delete(table).where(table.c.household_id == hh))
    session.execute(delete(Household).where(Household.id == hh))
    # The audit trail keeps what happened and when, not whom it was about.
    # Employees, operators and rules stay named: who acted on a household is kept.
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.household_id == hh)
        .values(
            household_id=None,
            subject=erased,
            actor=case((AuditEvent.actor.in_(accounts), erased), else_=AuditEvent.actor),
        )
    )
    session.execute(
        update(ErasureRequest)
        .where(ErasureRequest.household_id == hh)
        .values(
            household_id=None,
            requested_by=case(
                (ErasureRequest.requested_by.in_(accounts), None),
                else_=ErasureRequest.requested_by,
            ),
        )
    )
