"""The erasure steps that remove data: mark, keys, blobs, derived artifacts, rows.

Each step is idempotent: a worker killed anywhere leaves a job the next one finishes.
Keys go first (cryptographic erase, NIST SP 800-88: S6), then the ciphertext itself,
derived artifacts before the items they came from, then the rows (A5, C1, C10).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, case, delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.models import AuditEvent
from tutela.audit.service import AuditTag, record
from tutela.db.base import Base
from tutela.db.engine import purge_journal
from tutela.erasure import announce, selection
from tutela.erasure.jobs import MAX_FINGERPRINT_IDS, RECORD_TABLES, Fingerprints, Job, chunks
from tutela.erasure.models import ErasureRequest, ScopeKind
from tutela.erasure.scope import Scope
from tutela.households.models import Account, Device, Household, Profile, ProfileState
from tutela.identity.models import SignInSession
from tutela.notices.models import OutboxMessage
from tutela.vault.models import ItemKey, ItemState, MediaItem, ProfileKey

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine

log = logging.getLogger("tutela.erasure")


def mark(engine: ErasureEngine, job: Job) -> str:
    scope, now = job.scope, engine.clock.now()
    fp = Fingerprints()
    undelivered = _tell_before_keys(engine, job) if scope.kind is ScopeKind.HOUSEHOLD else 0
    with engine.stores.session() as session:
        if undelivered:
            # Kept apart from the household (its events lose their subject at `rows`).
            record(
                session,
                tag=AuditTag.ERASURE_NOTICE_UNDELIVERED,
                actor="system",
                now=now,
                subject=f"erasure:{job.row.id}",
            )
        if scope.kind is ScopeKind.HOUSEHOLD:
            session.execute(
                update(Household)
                .where(Household.id == scope.household_id)
                .values(state="under_erasure")
            )
            session.execute(
                update(Profile)
                .where(Profile.household_id == scope.household_id)
                .values(state=ProfileState.UNDER_ERASURE)
            )
            session.execute(
                update(Device)
                .where(Device.household_id == scope.household_id, Device.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            # Everyone in the home is signed out at once: nothing is read from here on.
            session.execute(
                delete(SignInSession).where(SignInSession.household_id == scope.household_id)
            )
        elif scope.kind is ScopeKind.PROFILE:
            session.execute(
                update(Profile)
                .where(Profile.household_id == scope.household_id, Profile.id == scope.profile_id)
                .values(state=ProfileState.UNDER_ERASURE)
            )
        rows = session.execute(
            selection.items_query(scope).add_columns(
                MediaItem.profile_id, MediaItem.content_mac, MediaItem.sealed_fields
            )
        ).all()
        ids = [r.id for r in rows]
        if scope.kind in (ScopeKind.ITEM, ScopeKind.ITEMS):
            for part in chunks(ids):
                session.execute(
                    update(MediaItem)
                    .where(MediaItem.household_id == scope.household_id, MediaItem.id.in_(part))
                    .values(state=ItemState.UNDER_ERASURE)
                )
        # What the remnant check will look for, and what the receipt counts.
        # A partial scope's profile stays: only the items themselves are looked for.
        fp.subject_ids = [] if scope.kind is ScopeKind.ITEMS else [str(scope.subject()[1])]
        fp.item_ids = [str(i) for i in ids[:MAX_FINGERPRINT_IDS]]
        fp.blob_keys = [r.blob_key for r in rows if r.blob_key][:MAX_FINGERPRINT_IDS]
        for r in rows:
            fp.counts[r.kind] = fp.counts.get(r.kind, 0) + 1
            fp.sample(r.content_mac and b"\x00" * 12 + r.content_mac)
            fp.sample(r.sealed_fields)
        profile_query = select(Profile).where(Profile.household_id == scope.household_id)
        if scope.kind is ScopeKind.PROFILE:
            profile_query = profile_query.where(Profile.id == scope.profile_id)
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            for profile in session.scalars(profile_query):
                fp.profile_ids.append(str(profile.id))
                fp.sample(profile.name_sealed)
                fp.sample(profile.birth_date_sealed)
            fp.counts["profiles"] = len(fp.profile_ids)
        if scope.kind is ScopeKind.HOUSEHOLD:
            for account in session.scalars(
                select(Account).where(Account.household_id == scope.household_id)
            ):
                fp.account_ids.append(str(account.id))
                fp.sample(account.email_sealed)
                fp.sample(b"\x00" * 12 + account.email_index)
            fp.counts["accounts"] = len(fp.account_ids)
        _sample_keys(engine, fp, scope)
        # Keys from before key epochs have older copies no epoch retires: the receipt then
        # promises no time for them (A8: never more than was verified).
        owners: set[uuid.UUID] | None = None
        if scope.kind is not ScopeKind.HOUSEHOLD:
            owners = {r.profile_id for r in rows}
            if scope.profile_id is not None:
                owners.add(scope.profile_id)
        fp.legacy_keys = engine.keys.legacy_profiles(
            household_id=scope.household_id, profile_ids=owners
        )
        values: dict[str, Any] = {
            "fingerprints_sealed": engine.seal(fp.to_bytes(), "fp", now=now),
            "counts": json.dumps(fp.counts, sort_keys=True),
        }
        if job.row.fingerprints_sealed is not None:
            # A re-run after a crash: the first fingerprints (taken before anything
            # was deleted) stay; they are a superset of what is left now.
            values = {}
        if values:
            session.execute(
                update(ErasureRequest).where(ErasureRequest.id == job.row.id).values(**values)
            )
        session.commit()
    if values:
        job.fp = fp
        job.row.counts = values["counts"]
    return "next"


def _tell_before_keys(engine: ErasureEngine, job: Job) -> int:
    """Deliver the closure's notices to the household's adults now: once `keys` has run,
    neither their addresses nor the notices' parameters can be opened (C10, S6). A
    closure never waits on a mail server: each notice is tried once, and what did not
    go is counted (and recorded by `mark`); the erasure goes on."""
    try:
        report = engine.notices.deliver_household(
            household_id=job.scope.household_id,
            kinds=announce.NOTICE_KINDS,
            now=engine.clock.now(),
        )
    except Exception as exc:  # the outbox or the mailer failing must not stop a closure
        log.warning("closure notices not delivered: %s", type(exc).__name__)
        return 1
    if report.failed or report.gave_up:
        log.warning("%d closure notices not delivered", report.failed + report.gave_up)
    return report.failed + report.gave_up


def _sample_keys(engine: ErasureEngine, fp: Fingerprints, scope: Scope) -> None:
    with engine.stores.key_sessions() as ks:
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            query = select(ProfileKey.wrapped).where(ProfileKey.household_id == scope.household_id)
            if scope.kind is ScopeKind.PROFILE:
                query = query.where(ProfileKey.profile_id == scope.profile_id)
            for wrapped in ks.scalars(query.limit(16)):
                fp.sample(wrapped)
        ids = [uuid.UUID(i) for i in fp.item_ids[:64]]
        if ids:
            for wrapped in ks.scalars(
                select(ItemKey.wrapped).where(
                    ItemKey.household_id == scope.household_id, ItemKey.item_id.in_(ids)
                )
            ):
                fp.sample(wrapped)


def grew(engine: ErasureEngine, job: Job) -> bool:
    """For a partial scope: did items join it since `mark` (an upload that raced the
    request)? They are added to what the job erases and checks, and the steps run
    again from `keys`, so no blob or row goes before its key."""
    scope = job.scope
    if scope.kind not in (ScopeKind.ITEM, ScopeKind.ITEMS):
        return False
    known = set(job.fp.item_ids)
    rows = [r for r in selection.scope_ids(engine.stores, scope) if str(r[0]) not in known]
    if not rows:
        return False
    now = engine.clock.now()
    with engine.stores.session() as session:
        for item in session.scalars(
            select(MediaItem).where(
                MediaItem.household_id == scope.household_id,
                MediaItem.id.in_([r[0] for r in rows]),
            )
        ):
            job.fp.item_ids.append(str(item.id))
            if item.blob_key:
                job.fp.blob_keys.append(item.blob_key)
            job.fp.counts[item.kind] = job.fp.counts.get(item.kind, 0) + 1
            item.state = ItemState.UNDER_ERASURE
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == job.row.id)
            .values(
                fingerprints_sealed=engine.seal(job.fp.to_bytes(), "fp", now=now),
                counts=json.dumps(job.fp.counts, sort_keys=True),
            )
        )
        session.commit()
    job.row.counts = json.dumps(job.fp.counts, sort_keys=True)
    log.info("erasure scope grew by %d items; keys again", len(rows))
    return True


def destroy_keys(engine: ErasureEngine, job: Job) -> str:
    scope = job.scope
    if scope.kind is ScopeKind.HOUSEHOLD:
        engine.keys.destroy_household_keys(household_id=scope.household_id)
    elif scope.kind is ScopeKind.PROFILE:
        assert scope.profile_id is not None
        engine.keys.destroy_profile_key(
            household_id=scope.household_id, profile_id=scope.profile_id
        )
    else:
        ids = {i for i, _, _ in selection.scope_ids(engine.stores, scope)} | {
            uuid.UUID(i) for i in job.fp.item_ids
        }
        for part in chunks(sorted(ids)):
            engine.keys.destroy_item_keys(household_id=scope.household_id, item_ids=part)
    _record_epoch(engine, job)
    return "next"


def _record_epoch(engine: ErasureEngine, job: Job) -> None:
    """Note the key epoch the destroyed keys' copies are wrapped under at the newest.

    Read after the destruction committed: a rotation that began before then has made its
    epoch current already, so the copies are under this epoch or an older one, and all of
    them are unreadable once this one is destroyed (S6). Kept as the maximum over reruns.
    """
    now = engine.clock.now()
    epoch = engine.keys.current_epoch(now=now)
    seq = max(epoch.seq, job.row.key_epoch or 0)
    newest = epoch if seq == epoch.seq else engine.keys.epoch(seq) or epoch
    by = None if job.fp.legacy_keys else engine.keys.unreadable_by(newest, now=now)
    with engine.stores.session() as session:
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == job.row.id)
            .values(key_epoch=seq, copies_unreadable_by=by, copies_unreadable_at=None)
        )
        session.commit()
    job.row.key_epoch = seq
    job.row.copies_unreadable_by = by
    job.row.copies_unreadable_at = None


def blobs(engine: ErasureEngine, job: Job) -> str:
    if grew(engine, job):
        return "again"
    scope, blobs = job.scope, engine.vault.blobs
    if scope.kind is ScopeKind.HOUSEHOLD:
        # The whole prefix: orphans of crashed uploads go with it.
        blobs.delete_prefix(f"{scope.household_id}/")
    elif scope.kind is ScopeKind.PROFILE:
        blobs.delete_prefix(f"{scope.household_id}/{scope.profile_id}/")
    else:
        keys = {b for _, b, _ in selection.scope_ids(engine.stores, scope) if b} | set(
            job.fp.blob_keys
        )
        blobs.delete_many(sorted(keys))
    return "next"


def derived(engine: ErasureEngine, job: Job) -> str:
    """Derived artifacts (transcripts, thumbnails) before the items they came from."""
    if grew(engine, job):
        return "again"
    scope = job.scope
    with engine.stores.session() as session:
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            session.execute(
                delete(MediaItem).where(
                    selection.primary(scope), MediaItem.source_item_id.is_not(None)
                )
            )
        else:
            ids = [
                i
                for i, _, source in selection.scope_ids(engine.stores, scope)
                if source is not None
            ]
            for part in chunks(ids):
                session.execute(
                    delete(MediaItem).where(
                        MediaItem.household_id == scope.household_id, MediaItem.id.in_(part)
                    )
                )
        session.commit()
    return "next"


def rows(engine: ErasureEngine, job: Job) -> str:
    if grew(engine, job):
        return "again"
    scope = job.scope
    erased = "erased:" + job.row.subject_digest[:16]
    with engine.stores.session() as session:
        _notices(engine, session, job)
        if scope.kind is ScopeKind.HOUSEHOLD:
            accounts = [f"account:{a}" for a in job.fp.account_ids]
            _household_rows(session, scope.household_id, erased, accounts)
        elif scope.kind is ScopeKind.PROFILE:
            _profile_rows(session, scope, erased)
        else:
            ids = [i for i, _, _ in selection.scope_ids(engine.stores, scope)]
            for part in chunks(ids):
                session.execute(
                    delete(MediaItem).where(
                        MediaItem.household_id == scope.household_id, MediaItem.id.in_(part)
                    )
                )
        session.commit()
    purge_journal(engine.stores.main)
    return "next"


def notices_of(scope: Scope) -> ColumnElement[bool] | None:
    """The outbox rows erased with `scope`: for a household every notice of its accounts,
    for a profile every notice about it (a guardian told the child's name); None for
    items, which no notice names."""
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
    hh, pid = scope.household_id, scope.profile_id
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
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.household_id == hh, AuditEvent.subject == f"profile:{pid}")
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
