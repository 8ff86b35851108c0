"""The erasure steps that make a scope unreadable: mark, keys, collect (S6, A5, A8).

Unreadable first, in constant time: for a profile or a household, `mark` changes states
and samples a few ciphertexts, and `keys` destroys the profile key(s), under which every
item key of theirs is wrapped; neither reads the items, so the time to unreadable does
not grow with them. Only then does `collect` read and fingerprint the rows. For item
scopes and batches `mark` reads the items (their keys are destroyed one by one) with one
statement over the whole set. Each step is idempotent, and records its completion in
the transaction of its own work.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.db.idsets import pair_in
from tutela.erasure import announce, packages, selection
from tutela.erasure.jobs import MAX_FINGERPRINT_IDS, MAX_SAMPLES, Fingerprints, Job
from tutela.erasure.models import ErasureRequest, ScopeKind, Step
from tutela.erasure.scope import Scope
from tutela.households.models import Account, Device, Household, Profile, ProfileState
from tutela.identity.models import SignInSession
from tutela.vault.models import ItemKey, ItemState, MediaItem, ProfileKey

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine

log = logging.getLogger("tutela.erasure")
KEY_SAMPLES = 16


def _seal_fp(engine: ErasureEngine, job: Job, fp: Fingerprints) -> dict[str, Any]:
    now = engine.clock.now()
    return {
        "fingerprints_sealed": engine.seal(fp.to_bytes(), "fp", now=now),
        "counts": json.dumps(fp.counts, sort_keys=True),
    }


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
        if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
            _mark_subject(engine, session, scope, fp, now=now)
        else:
            _collect_items(engine, session, job, fp)
            fp.collected = True
        # A re-run after a crash keeps the first fingerprints (taken before anything was
        # deleted): they are a superset of what is left now.
        values = _seal_fp(engine, job, fp) if job.row.fingerprints_sealed is None else {}
        if not engine.leases.advance(job, Step.MARK, Step.KEYS, session=session, **values):
            return "lost"
        session.commit()
    if values:
        job.fp = fp
    return "advanced"


def _mark_subject(
    engine: ErasureEngine, session: Session, scope: Scope, fp: Fingerprints, *, now: Any
) -> None:
    """A profile's or a household's states, and the few rows that name it: constant time."""
    hh = scope.hh
    if scope.kind is ScopeKind.HOUSEHOLD:
        session.execute(update(Household).where(Household.id == hh).values(state="under_erasure"))
        session.execute(
            update(Profile)
            .where(Profile.household_id == hh)
            .values(state=ProfileState.UNDER_ERASURE)
        )
        session.execute(
            update(Device)
            .where(Device.household_id == hh, Device.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        # Everyone in the home is signed out at once: nothing is read from here on.
        session.execute(delete(SignInSession).where(SignInSession.household_id == hh))
    else:
        session.execute(
            update(Profile)
            .where(Profile.household_id == hh, Profile.id == scope.profile_id)
            .values(state=ProfileState.UNDER_ERASURE)
        )
    fp.subject_ids = [str(scope.subject()[1])]
    profile_query = select(Profile).where(Profile.household_id == hh)
    if scope.kind is ScopeKind.PROFILE:
        profile_query = profile_query.where(Profile.id == scope.profile_id)
    for profile in session.scalars(profile_query):
        fp.profile_ids.append(str(profile.id))
        fp.sample(profile.name_sealed)
        fp.sample(profile.birth_date_sealed)
    fp.counts["profiles"] = len(fp.profile_ids)
    if scope.kind is ScopeKind.HOUSEHOLD:
        for account in session.scalars(select(Account).where(Account.household_id == hh)):
            fp.account_ids.append(str(account.id))
            fp.sample(account.email_sealed)
            fp.sample(b"\x00" * 12 + account.email_index)
        fp.counts["accounts"] = len(fp.account_ids)
    with engine.stores.key_sessions() as ks:
        query = select(ProfileKey.wrapped).where(ProfileKey.household_id == hh)
        if scope.kind is ScopeKind.PROFILE:
            query = query.where(ProfileKey.profile_id == scope.profile_id)
        for wrapped in ks.scalars(query.limit(KEY_SAMPLES)):
            fp.sample(wrapped)
    # Keys from before key epochs have older copies no epoch retires: the receipt then
    # promises no time for them (A8: never more than was verified).
    fp.legacy_keys = engine.keys.legacy_profiles(
        household_id=hh,
        profile_ids=None if scope.profile_id is None else [scope.profile_id],
    )


def _collect_items(engine: ErasureEngine, session: Session, job: Job, fp: Fingerprints) -> None:
    """An item scope's or a batch's items, read once with their derived artifacts: marked
    under erasure (they leave every listing), fingerprinted, counted by kind (and, for a
    batch, by subject), with one statement each."""
    scope, pg = job.scope, engine.postgresql
    if scope.kind is not ScopeKind.BATCH:
        # A partial scope's profile stays: only the items themselves are looked for.
        fp.subject_ids = [] if scope.kind is ScopeKind.ITEMS else [str(scope.subject()[1])]
    rows = list(session.execute(selection.items_query(scope, postgresql=pg)).all())
    # Export packages named by the batch, or holding a copy of these items (A5).
    rows += packages.reached(session, scope, rows, postgresql=pg)
    if not rows:
        return
    pairs = [(r.household_id, r.id) for r in rows]
    session.execute(
        update(MediaItem)
        .where(pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=pg))
        .values(state=ItemState.UNDER_ERASURE)
        .execution_options(synchronize_session=False)
    )
    _fingerprint_rows(engine, session, fp, rows, pairs)
    fp.members = [[r.household_id.hex, r.profile_id.hex, r.id.hex] for r in rows]
    if scope.kind is ScopeKind.BATCH:
        for r in rows:
            counts = fp.subjects.setdefault(str(r.profile_id), {})
            counts[r.kind] = counts.get(r.kind, 0) + 1
    with engine.stores.key_sessions() as ks:
        sample = pairs[:KEY_SAMPLES]
        for wrapped in ks.scalars(
            select(ItemKey.wrapped).where(
                pair_in(ItemKey.household_id, ItemKey.item_id, sample, postgresql=pg)
            )
        ):
            fp.sample(wrapped)
    fp.legacy_keys = engine.keys.legacy_among({(r.household_id, r.profile_id) for r in rows})


def _fingerprint_rows(
    engine: ErasureEngine,
    session: Session,
    fp: Fingerprints,
    rows: list[Any],
    pairs: list[tuple[uuid.UUID, uuid.UUID]],
) -> None:
    """Ids, blob keys and counts of `rows`; ciphertext samples of the first few only."""
    fp.item_ids = [str(r.id) for r in rows[:MAX_FINGERPRINT_IDS]]
    fp.blob_keys = [r.blob_key for r in rows if r.blob_key][:MAX_FINGERPRINT_IDS]
    for r in rows:
        fp.counts[r.kind] = fp.counts.get(r.kind, 0) + 1
    room = MAX_SAMPLES - len(fp.samples)
    if room > 0:
        sampled = session.execute(
            select(MediaItem.content_mac, MediaItem.sealed_fields).where(
                pair_in(
                    MediaItem.household_id,
                    MediaItem.id,
                    pairs[:room],
                    postgresql=engine.postgresql,
                )
            )
        ).all()
        for mac, fields in sampled:
            fp.sample(mac and b"\x00" * 12 + mac)
            fp.sample(fields)


def _tell_before_keys(engine: ErasureEngine, job: Job) -> int:
    """Deliver the closure's notices to the household's adults now: once `keys` has run,
    neither their addresses nor the notices' parameters can be opened (C10, S6). A
    closure never waits on a mail server: each notice is tried once, and what did not
    go is counted (and recorded by `mark`); the erasure goes on."""
    try:
        report = engine.notices.deliver_household(
            household_id=job.scope.hh,
            kinds=announce.NOTICE_KINDS,
            now=engine.clock.now(),
        )
    except Exception as exc:  # the outbox or the mailer failing must not stop a closure
        log.warning("closure notices not delivered: %s", type(exc).__name__)
        return 1
    if report.failed or report.gave_up:
        log.warning("%d closure notices not delivered", report.failed + report.gave_up)
    return report.failed + report.gave_up


def destroy_keys(engine: ErasureEngine, job: Job) -> str:
    """Profile keys for a profile or a household (their item keys go with the rows:
    unusable already), item keys for item scopes and batches, one statement each."""
    scope = job.scope
    if scope.kind is ScopeKind.HOUSEHOLD:
        engine.keys.destroy_household_keys(household_id=scope.hh, items=False)
    elif scope.kind is ScopeKind.PROFILE:
        assert scope.profile_id is not None
        engine.keys.destroy_profile_key(
            household_id=scope.hh, profile_id=scope.profile_id, items=False
        )
    else:
        engine.keys.destroy_item_key_pairs(job.fp.pairs())
    return _record_epoch(engine, job)


def _record_epoch(engine: ErasureEngine, job: Job) -> str:
    """Note the key epoch the destroyed keys' copies are wrapped under at the newest,
    with the step's completion.

    Read after the destruction committed: a rotation that began before then has made its
    epoch current already, so the copies are under this epoch or an older one, and all of
    them are unreadable once this one is destroyed (S6). Kept as the maximum over reruns.
    """
    now = engine.clock.now()
    epoch = engine.keys.current_epoch(now=now)
    seq = max(epoch.seq, job.row.key_epoch or 0)
    newest = epoch if seq == epoch.seq else engine.keys.epoch(seq) or epoch
    by = None if job.fp.legacy_keys else engine.keys.unreadable_by(newest, now=now)
    following = Step.COLLECT if not job.fp.collected else Step.BLOBS
    with engine.stores.session() as session:
        if not engine.leases.advance(
            job,
            Step.KEYS,
            following,
            session=session,
            key_epoch=seq,
            copies_unreadable_by=by,
            copies_unreadable_at=None,
        ):
            return "lost"
        session.commit()
    return "advanced"


def collect(engine: ErasureEngine, job: Job) -> str:
    """A profile's or a household's rows, read now that they are unreadable: ids, blob
    keys, counts and ciphertext samples for the receipt and the remnant check (A8)."""
    scope, fp = job.scope, job.fp
    if fp.collected:
        return "next"
    with engine.stores.session() as session:
        rows = list(
            session.execute(selection.items_query(scope, postgresql=engine.postgresql)).all()
        )
        _fingerprint_rows(engine, session, fp, rows, [(r.household_id, r.id) for r in rows])
        with engine.stores.key_sessions() as ks:
            query = select(ItemKey.wrapped).where(ItemKey.household_id == scope.hh)
            if scope.kind is ScopeKind.PROFILE:
                query = query.where(ItemKey.profile_id == scope.profile_id)
            for wrapped in ks.scalars(query.limit(KEY_SAMPLES)):
                fp.sample(wrapped)
        fp.collected = True
        if not engine.leases.advance(
            job, Step.COLLECT, Step.BLOBS, session=session, **_seal_fp(engine, job, fp)
        ):
            return "lost"
        session.commit()
    return "advanced"


def grew(engine: ErasureEngine, job: Job) -> bool:
    """For an item scope or a batch: did items join it since `mark` (an upload that raced
    the request, a transcript of an item being erased)? They are added to what the job
    erases and checks, and the steps run again from `keys`, so no blob or row goes before
    its key. Asked once, before the remnant check."""
    scope = job.scope
    if scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD):
        return False
    known = {uuid.UUID(i) for _, _, i in job.fp.members}
    with engine.stores.session() as session:
        rows = [
            r
            for r in session.execute(selection.items_query(scope, postgresql=engine.postgresql))
            if r.id not in known
        ]
        if not rows:
            return False
        pairs = [(r.household_id, r.id) for r in rows]
        session.execute(
            update(MediaItem)
            .where(
                pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=engine.postgresql)
            )
            .values(state=ItemState.UNDER_ERASURE)
            .execution_options(synchronize_session=False)
        )
        fp = job.fp
        for r in rows:
            fp.members.append([r.household_id.hex, r.profile_id.hex, r.id.hex])
            fp.item_ids.append(str(r.id))
            if r.blob_key:
                fp.blob_keys.append(r.blob_key)
            fp.counts[r.kind] = fp.counts.get(r.kind, 0) + 1
            if scope.kind is ScopeKind.BATCH:
                counts = fp.subjects.setdefault(str(r.profile_id), {})
                counts[r.kind] = counts.get(r.kind, 0) + 1
        session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == job.row.id)
            .values(**_seal_fp(engine, job, fp))
        )
        session.commit()
    job.row.counts = json.dumps(job.fp.counts, sort_keys=True)
    log.info("erasure scope grew by %d items; keys again", len(rows))
    return True
