"""Key rotation: key epochs, which bound how long any copy of a destroyed key stays
readable, and the master key.

An epoch rotation (NIST SP 800-88 cryptographic erase over every copy, S6; A8):

1. A new epoch key is made in the key source and becomes current; the old one retires.
   From here new profile keys are wrapped under the new epoch only.
2. Every profile one of whose items was erased gets a new item-wrapping key: its live
   item keys are re-wrapped under it, so no live key unwraps an old copy of an erased
   item's key.
3. Every other profile key is re-wrapped under the new epoch.
4. Once nothing live is wrapped under a retiring epoch (checked under a lock that waits
   for writes in flight), its key is destroyed in the key source. Every stale copy of a
   key destroyed before that point (a dead tuple, a free page, the WAL, a replica, a
   backup of the key store) is now wrapped under a key that exists nowhere.

Epochs rotate every half window, so a key destroyed at any time is unrecoverable from
every copy within the window (`TUTELA_KEY_COPIES_WINDOW_HOURS`, 24 h by default). A
rotation that stops part-way is finished by the next one; two workers never rotate at once
(a lease on the epoch's row). The master key rotates apart: it wraps service keys and
seals epoch keys, never a subject's key.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import String, bindparam, func, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from tutela.core.clock import Clock
from tutela.core.errors import IntegrityFailure, KeyUnavailable
from tutela.db.engine import purge_journal
from tutela.vault import crypto
from tutela.vault.keystore import (
    PROFILE_ROW,
    Epoch,
    KeyStore,
    item_context,
    items_context,
    profile_context,
    service_context,
)
from tutela.vault.models import EpochState, ItemKey, KeyEpoch, ProfileKey, ServiceKey

log = logging.getLogger("tutela.vault")
LEASE = timedelta(minutes=15)


@dataclass(frozen=True)
class EpochRotation:
    """What one epoch rotation did."""

    current: Epoch
    destroyed: list[Epoch] = field(default_factory=list)
    rekeyed_profiles: int = 0
    rewrapped_items: int = 0
    rewrapped_profiles: int = 0


@dataclass(frozen=True)
class RotationResult:
    new_master_key_id: str
    rewrapped: int
    retired: list[str]


def epoch_due(keys: KeyStore, *, now: datetime) -> bool:
    """Whether an epoch rotation should run now: the current epoch is half a window old,
    or an earlier rotation stopped before destroying what it retired."""
    current = keys.current_epoch(now=now)
    if now - current.started_at >= keys.window / 2:
        return True
    return bool(_retiring(keys, before=current.seq))


class LeaseLost(Exception):
    """Another worker holds the rotation now: this one stops, having changed nothing that
    the lease's holder relies on."""


def _take_lease(keys: KeyStore, *, owner: str, now: datetime) -> Epoch | None:
    """Take the rotation lease on the current epoch's row (a guarded UPDATE naming this
    worker), and return that epoch as it is once taken; None if another worker holds it."""
    with keys.sessions() as s:
        taken = s.execute(
            update(KeyEpoch)
            .where(
                KeyEpoch.state == EpochState.CURRENT,
                or_(KeyEpoch.rotating_until.is_(None), KeyEpoch.rotating_until < now),
            )
            .values(rotating_until=now + LEASE, lease_owner=owner)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) != 1:
            s.rollback()
            return None
        row = s.scalar(
            select(KeyEpoch).where(
                KeyEpoch.state == EpochState.CURRENT, KeyEpoch.lease_owner == owner
            )
        )
        s.commit()
        return None if row is None else Epoch.of(row)


@dataclass
class _Lease:
    """This worker's hold on a rotation: renewed, and checked, first in every transaction
    the rotation writes, so a worker that stalled past its lease changes nothing more."""

    keys: KeyStore
    owner: str
    clock: Clock
    epoch: Epoch

    def renew(self, s: Session) -> None:
        # The first statement of the transaction, and a write: on SQLite it takes the write
        # lock, on PostgreSQL the epoch row's lock, so no other worker can take over
        # until this transaction ends.
        held = s.execute(
            update(KeyEpoch)
            .where(
                KeyEpoch.seq == self.epoch.seq,
                KeyEpoch.state == EpochState.CURRENT,
                KeyEpoch.lease_owner == self.owner,
            )
            .values(rotating_until=self.clock.now() + LEASE)
            .execution_options(synchronize_session=False)
        )
        if getattr(held, "rowcount", 0) != 1:
            s.rollback()
            raise LeaseLost

    def release(self) -> None:
        with self.keys.sessions() as s:
            s.execute(
                update(KeyEpoch)
                .where(KeyEpoch.seq == self.epoch.seq, KeyEpoch.lease_owner == self.owner)
                .values(rotating_until=None, lease_owner=None)
                .execution_options(synchronize_session=False)
            )
            s.commit()


def _retiring(keys: KeyStore, *, before: int) -> list[Epoch]:
    with keys.sessions() as s:
        rows = s.scalars(
            select(KeyEpoch)
            .where(KeyEpoch.state == EpochState.RETIRING, KeyEpoch.seq < before)
            .order_by(KeyEpoch.seq)
        ).all()
        return [Epoch.of(r) for r in rows]


def rotate_epoch(
    keys: KeyStore,
    *,
    clock: Clock,
    batch_size: int = 500,
    force: bool = False,
    before_destroy: Callable[[Epoch], object] | None = None,
) -> EpochRotation | None:
    """Run (or finish) an epoch rotation if one is due (or `force`); None when another
    worker holds the rotation, takes it over, or nothing is due.

    `before_destroy` moves what other stores keep under keys derived from the epoch (the
    accounts' email indexes) to the new one; if it fails, nothing is destroyed.
    """
    now = clock.now()
    if not force and not epoch_due(keys, now=now):
        return None
    owner = secrets.token_hex(8)
    held = _take_lease(keys, owner=owner, now=now)
    if held is None:
        return None
    lease = _Lease(keys, owner, clock, held)
    try:
        orphans = set(keys.source.epoch_ids()) - {e.id for e in keys.epochs()}
        if not _retiring(keys, before=lease.epoch.seq):
            _begin(lease)
        rekeyed, items = _rekey_profiles(lease, batch_size=batch_size)
        rewrapped = _rewrap_profiles(lease, batch_size=batch_size)
        if before_destroy is not None:
            before_destroy(lease.epoch)
        destroyed = _destroy_retired(lease, batch_size=batch_size)
        with keys.sessions() as s:
            lease.renew(s)
            s.commit()
        for orphan in orphans:
            # An epoch key made by a rotation or a first use that died before recording
            # it (or lost the race to): never used.
            keys.source.destroy_epoch(orphan)
    except LeaseLost:
        log.warning("another worker took over the key epoch rotation")
        return None
    lease.release()
    purge_journal(keys.sessions.kw["bind"])
    log.info(
        "key epoch %d current; %d destroyed, %d profiles re-keyed (%d item keys), %d re-wrapped",
        lease.epoch.seq,
        len(destroyed),
        rekeyed,
        items,
        rewrapped,
    )
    return EpochRotation(
        current=lease.epoch,
        destroyed=destroyed,
        rekeyed_profiles=rekeyed,
        rewrapped_items=items,
        rewrapped_profiles=rewrapped,
    )


def _begin(lease: _Lease) -> None:
    """A new epoch, current from this commit; the lease moves to it."""
    keys, old, now = lease.keys, lease.epoch, lease.clock.now()
    new_id = keys.source.new_epoch()
    try:
        with keys.sessions() as s:
            lease.renew(s)
            s.execute(
                update(KeyEpoch)
                .where(KeyEpoch.seq == old.seq)
                .values(
                    state=EpochState.RETIRING,
                    retiring_at=now,
                    rotating_until=None,
                    lease_owner=None,
                )
            )
            s.flush()  # one current epoch at a time (a partial unique index)
            s.add(
                KeyEpoch(
                    seq=old.seq + 1,
                    id=new_id,
                    state=EpochState.CURRENT,
                    started_at=now,
                    rotating_until=now + LEASE,
                    lease_owner=lease.owner,
                )
            )
            s.commit()
    except BaseException:
        keys.source.destroy_epoch(new_id)
        raise
    fresh = keys.epoch(old.seq + 1)
    assert fresh is not None
    lease.epoch = fresh


def _lock_profile(keys: KeyStore, s: Session, household_id: uuid.UUID, pid: uuid.UUID) -> None:
    """Hold the profile's key row for this transaction: FOR UPDATE on PostgreSQL (SQLite's
    write lock, taken by the lease's renewal, already holds every row)."""
    if keys.postgresql:
        s.execute(
            select(ProfileKey.generation)
            .where(ProfileKey.household_id == household_id, ProfileKey.profile_id == pid)
            .with_for_update()
        )


def rekey_profile(lease: _Lease, *, household_id: uuid.UUID, profile_id: uuid.UUID) -> int:
    """Give a profile a new item-wrapping key and re-wrap its live item keys under it;
    returns how many item keys were re-wrapped. Both of its keys end wrapped under the
    lease's epoch. Uploads racing this either commit before it (and are re-wrapped) or see
    the new generation (and wrap under the new key)."""
    keys, epoch = lease.keys, lease.epoch
    with keys.sessions() as s:
        lease.renew(s)
        _lock_profile(keys, s, household_id, profile_id)
        row = s.get(ProfileKey, (household_id, profile_id), populate_existing=True)
        if row is None or not row.rekey_due:
            s.commit()
            return 0
        profile_key, old_items_key = keys.unwrap_profile_row(row)
        # Item keys were under the profile key itself (or the row under a master key):
        # old copies of them stay readable while those live, whatever the epochs do.
        legacy = row.legacy or row.epoch_id is None or row.items_wrapped is None
        new_items_key = crypto.new_key()
        old_wrapper, new_wrapper = (
            crypto.KeyWrapper(old_items_key),
            crypto.KeyWrapper(new_items_key),
        )
        rewrapped = []
        for item_id, wrapped in s.execute(
            select(ItemKey.item_id, ItemKey.wrapped).where(
                ItemKey.household_id == household_id, ItemKey.profile_id == profile_id
            )
        ):
            context = item_context(household_id, item_id)
            key = old_wrapper.unwrap(wrapped, context=context)
            rewrapped.append(
                {
                    "household_id": household_id,
                    "item_id": item_id,
                    "wrapped": new_wrapper.wrap(key, context=context),
                }
            )
        if rewrapped:
            s.execute(update(ItemKey), rewrapped)
        kek = keys.source.epoch_key(epoch.id)
        row.wrapped = crypto.wrap_key(
            kek, profile_key, context=profile_context(household_id, profile_id)
        )
        row.items_wrapped = crypto.wrap_key(
            kek, new_items_key, context=items_context(household_id, profile_id)
        )
        row.legacy = legacy
        row.epoch_id = epoch.id
        row.master_key_id = None
        row.generation += 1
        row.rekey_due = False
        s.commit()
    return len(rewrapped)


def _rekey_profiles(lease: _Lease, *, batch_size: int) -> tuple[int, int]:
    profiles, items = 0, 0
    after: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        query = (
            select(ProfileKey.household_id, ProfileKey.profile_id)
            .where(ProfileKey.rekey_due.is_(True))
            .order_by(ProfileKey.household_id, ProfileKey.profile_id)
            .limit(batch_size)
        )
        if after is not None:
            query = query.where(
                or_(
                    ProfileKey.household_id > after[0],
                    (ProfileKey.household_id == after[0]) & (ProfileKey.profile_id > after[1]),
                )
            )
        with lease.keys.sessions() as s:
            batch = [(r[0], r[1]) for r in s.execute(query)]
        if not batch:
            return profiles, items
        for household_id, profile_id in batch:
            items += rekey_profile(lease, household_id=household_id, profile_id=profile_id)
            profiles += 1
        after = batch[-1]


_REWRAP = (
    update(ProfileKey)
    .where(
        ProfileKey.household_id == bindparam("row_household"),
        ProfileKey.profile_id == bindparam("row_profile"),
        ProfileKey.generation == bindparam("read_generation"),
        ProfileKey.epoch_id.is_not_distinct_from(bindparam("read_epoch", type_=String)),
    )
    .values(
        wrapped=bindparam("new_wrapped"),
        items_wrapped=bindparam("new_items_wrapped"),
        epoch_id=bindparam("new_epoch"),
        master_key_id=None,
        # Older copies of a row from before epochs are under a master key. (SET reads the
        # row as it was before this statement.)
        legacy=or_(ProfileKey.legacy, ProfileKey.epoch_id.is_(None)),
    )
)


def _rewrap_profiles(lease: _Lease, *, batch_size: int) -> int:
    """Re-wrap every profile's keys not yet under the lease's epoch, in key order; each
    batch commits alone, the lease renewed and checked first. A row skipped by the guard
    (changed since it was read) is left for `_destroy_retired`, which runs this again until
    no row is left under an old epoch."""
    keys, epoch = lease.keys, lease.epoch
    new = crypto.KeyWrapper(keys.source.epoch_key(epoch.id))
    done = 0
    stale = or_(ProfileKey.epoch_id.is_(None), ProfileKey.epoch_id != epoch.id)
    after: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        # Keyset order, not "the first stale rows" again: rows already done are never
        # scanned again (dead tuples on PostgreSQL, updated rows on SQLite). A row-value
        # comparison, which PostgreSQL's planner turns into an index bound (the OR form
        # becomes a filter over the index from its start).
        query = (
            select(*PROFILE_ROW)
            .where(stale)
            .order_by(ProfileKey.household_id, ProfileKey.profile_id)
            .limit(batch_size)
        )
        if after is not None:
            query = query.where(tuple_(ProfileKey.household_id, ProfileKey.profile_id) > after)
        with keys.sessions() as s:
            lease.renew(s)
            rows = s.execute(query).all()
            if not rows:
                s.commit()
                return done
            values = []
            keks: dict[tuple[str | None, str | None], crypto.KeyWrapper] = {}
            # The rows unpacked and unwrapped here rather than through
            # `KeyStore.unwrap_profile_row`: at a rotation's scale, attribute access on a
            # Row and building each context twice cost as much as the AES-GCM itself.
            for hh, pid, wrapped, epoch_id, master_key_id, items_wrapped, generation in rows:
                profile_ctx, items_ctx = profile_context(hh, pid), items_context(hh, pid)
                try:
                    old = keks.get((epoch_id, master_key_id))
                    if old is None:
                        old = crypto.KeyWrapper(
                            keys.wrapping_key(epoch_id=epoch_id, master_key_id=master_key_id)
                        )
                        keks[(epoch_id, master_key_id)] = old
                except KeyUnavailable as exc:
                    # Wrapped under an epoch that is already gone: nothing can read it, and
                    # no rotation can finish until an operator looks.
                    raise IntegrityFailure(
                        "A profile key is wrapped under a destroyed key epoch."
                    ) from exc
                profile_key = old.unwrap(wrapped, context=profile_ctx)
                values.append(
                    {
                        "row_household": hh,
                        "row_profile": pid,
                        "read_generation": generation,
                        "read_epoch": epoch_id,
                        "new_wrapped": new.wrap(profile_key, context=profile_ctx),
                        # None: the item keys are under the profile key itself (rows from
                        # before key epochs), and stay so.
                        "new_items_wrapped": (
                            None
                            if items_wrapped is None
                            else new.wrap(
                                old.unwrap(items_wrapped, context=items_ctx), context=items_ctx
                            )
                        ),
                        "new_epoch": epoch.id,
                    }
                )
            s.connection().execute(_REWRAP, values)
            s.commit()
        done += len(rows)
        after = (rows[-1].household_id, rows[-1].profile_id)


def _destroy_retired(lease: _Lease, *, batch_size: int) -> list[Epoch]:
    """Destroy every epoch older than the lease's once nothing live is wrapped under it."""
    keys = lease.keys
    retiring = _retiring(keys, before=lease.epoch.seq)
    if not retiring:
        return []
    ids = [e.id for e in retiring]
    while True:
        with keys.sessions() as s:
            lease.renew(s)  # on SQLite: the write lock, held through the count
            if keys.postgresql:
                # SHARE mode waits for inserts and updates in flight, so none of them can
                # commit a row under a retiring epoch after this count.
                s.execute(text("LOCK TABLE profile_keys IN SHARE MODE"))
            left = s.scalar(
                select(func.count())
                .select_from(ProfileKey)
                .where(or_(ProfileKey.epoch_id.is_(None), ProfileKey.epoch_id.in_(ids)))
            )
            s.commit()
        if not left:
            break
        _rewrap_profiles(lease, batch_size=batch_size)
    for old in retiring:
        keys.source.destroy_epoch(old.id)
    with keys.sessions() as s:
        s.execute(
            update(KeyEpoch)
            .where(
                KeyEpoch.seq.in_([e.seq for e in retiring]), KeyEpoch.state == EpochState.RETIRING
            )
            .values(state=EpochState.DESTROYED, destroyed_at=lease.clock.now())
        )
        s.commit()
    return [keys.epoch(e.seq) or e for e in retiring]


# --- the master key ----------------------------------------------------------------------


def _rewrap_masters(keys: KeyStore, new_id: str, new_key: bytes, batch_size: int) -> int:
    """Re-wrap service keys, and profile keys from before epochs, under the new master."""
    rewrapped = 0
    while True:
        with keys.sessions() as s:
            rows = s.scalars(
                select(ProfileKey)
                .where(ProfileKey.epoch_id.is_(None), ProfileKey.master_key_id != new_id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            for row in rows:
                assert row.master_key_id is not None
                ctx = profile_context(row.household_id, row.profile_id)
                key = crypto.unwrap_key(
                    keys.source.key(row.master_key_id), row.wrapped, context=ctx
                )
                row.wrapped = crypto.wrap_key(new_key, key, context=ctx)
                row.master_key_id = new_id
            rewrapped += len(rows)
            s.commit()
    with keys.sessions() as s:
        for svc in s.scalars(select(ServiceKey).where(ServiceKey.master_key_id != new_id)):
            ctx = service_context(svc.name)
            key = crypto.unwrap_key(keys.source.key(svc.master_key_id), svc.wrapped, context=ctx)
            svc.wrapped = crypto.wrap_key(new_key, key, context=ctx)
            svc.master_key_id = new_id
            rewrapped += 1
        s.commit()
    return rewrapped


def rotate_master(keys: KeyStore, *, batch_size: int = 500) -> RotationResult:
    """Re-wrap every service key (and seal every epoch key) under a new master key, then
    retire the old one.

    Blobs, item keys and epoch-wrapped profile keys are untouched: only the top of the
    hierarchy changes. Each batch commits on its own; if the rotation stops part-way,
    running it again finishes it, and the old master key is retired only once nothing is
    wrapped under it any more.
    """
    source = keys.source
    held = source.key_ids()
    new_id = source.current_id() if len(held) > 1 else source.begin_rotation()
    new_key = source.key(new_id)
    rewrapped = 0
    while True:
        # Re-wrap until nothing is left under an old key: an API process may have
        # wrapped a new service key under the old master just before it saw the new.
        rewrapped += _rewrap_masters(keys, new_id, new_key, batch_size)
        with keys.sessions() as s:
            in_use = set(
                s.scalars(
                    select(ProfileKey.master_key_id)
                    .where(ProfileKey.master_key_id.is_not(None))
                    .distinct()
                )
            )
            in_use |= set(s.scalars(select(ServiceKey.master_key_id).distinct()))
        if in_use <= {new_id}:
            break
    retired = []
    for old_id in source.key_ids():
        if old_id != new_id and old_id not in in_use:
            source.retire(old_id)
            retired.append(old_id)
    return RotationResult(new_master_key_id=new_id, rewrapped=rewrapped, retired=retired)
