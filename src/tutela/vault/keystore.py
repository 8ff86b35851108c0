"""The key store: profile and item keys, wrapped, in a database apart from the main one.

A restored backup of the main database, or a stale replica of it, therefore holds only
ciphertext. Destroying a key here is a cryptographic erase (NIST SP 800-88, S6): the
data it protected is unreadable at once in the live stores. Older copies of the key
store's rows (dead tuples, free pages, the WAL, replicas, backups) are wrapped under key
epochs that end within a configured window (`tutela.vault.rotation`), so a destroyed key
is unrecoverable from every copy once the epoch it was last wrapped under is destroyed.

Hierarchy: the current epoch key (held by the key source only) wraps each profile's two
keys, the profile key (which seals the profile's own fields) and its item-wrapping key
(which wraps one key per item). The master key wraps the service keys and seals the epoch
keys in the key source.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tutela.core.errors import KeyUnavailable, ServiceUnavailable
from tutela.core.types import Binary, UTCDateTime
from tutela.db.engine import purge_journal
from tutela.db.idsets import pair_in
from tutela.vault import crypto
from tutela.vault.keysource import KeySource
from tutela.vault.models import EpochState, ItemKey, KeyEpoch, ProfileKey, ServiceKey

EMAIL_INDEX_KEY = "email-index"
DEFAULT_WINDOW = timedelta(hours=24)
_ATTEMPTS = 4


def profile_context(household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
    return b"tutela:profile-key:" + household_id.bytes + profile_id.bytes


def items_context(household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
    return b"tutela:item-wrapping-key:" + household_id.bytes + profile_id.bytes


def item_context(household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
    return b"tutela:item-key:" + household_id.bytes + item_id.bytes


def service_context(name: str) -> bytes:
    return b"tutela:service-key:" + name.encode()


def _insert_if(conn: Connection, model: Any, values: dict[str, Any], condition: Any) -> bool:
    """INSERT one row of `values` only if `condition` holds as the statement runs (one
    statement: atomic on both stores); whether it was written. RETURNING, not rowcount:
    psycopg reports no count for INSERT ... SELECT."""
    statement = (
        insert(model)
        .from_select(list(values), select(*values.values()).where(condition))
        .returning(literal(1))
    )
    return len(conn.execute(statement).all()) == 1


PROFILE_ROW = (
    ProfileKey.household_id,
    ProfileKey.profile_id,
    ProfileKey.wrapped,
    ProfileKey.epoch_id,
    ProfileKey.master_key_id,
    ProfileKey.items_wrapped,
    ProfileKey.generation,
)
"""The columns of a `profile_keys` row that unwrapping its keys needs."""


@dataclass(frozen=True)
class Epoch:
    """A key epoch as the key store knows it (its key is the key source's alone)."""

    seq: int
    id: str
    state: str
    started_at: datetime
    destroyed_at: datetime | None

    @classmethod
    def of(cls, row: KeyEpoch) -> Epoch:
        return cls(row.seq, row.id, row.state, row.started_at, row.destroyed_at)


class KeyStore:
    """Creates, unwraps and destroys keys. Each call is its own short transaction."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        source: KeySource,
        *,
        window: timedelta = DEFAULT_WINDOW,
    ) -> None:
        self.sessions = sessions
        self.source = source
        self.window = window
        # Per-upload and per-read statements are single statements, each atomic alone:
        # autocommit spares them a BEGIN and a COMMIT round trip.
        self._engine: Engine = sessions.kw["bind"]
        self._autocommit: Engine = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self.postgresql = self._engine.dialect.name == "postgresql"
        self._service_keys: dict[str, bytes] = {}
        self._subkeys: dict[tuple[str, str], bytes] = {}

    # --- epochs -------------------------------------------------------------------------

    def current_epoch(self, *, now: datetime) -> Epoch:
        """The epoch that wraps new keys; the first one is made on first use."""
        for _ in range(_ATTEMPTS):
            with self.sessions() as s:
                row = s.scalar(select(KeyEpoch).where(KeyEpoch.state == EpochState.CURRENT))
                if row is not None:
                    return Epoch.of(row)
                last = s.scalar(select(func.max(KeyEpoch.seq))) or 0
                epoch_id = self.source.new_epoch()
                s.add(KeyEpoch(seq=last + 1, id=epoch_id, state=EpochState.CURRENT, started_at=now))
                try:
                    s.commit()
                except IntegrityError:
                    # Another process made it first: use theirs, forget ours.
                    s.rollback()
                    self.source.destroy_epoch(epoch_id)
                    continue
                return self.current_epoch(now=now)
        raise ServiceUnavailable("The key store has no current key epoch.", code="key_epoch")

    def epochs(self) -> list[Epoch]:
        with self.sessions() as s:
            return [Epoch.of(r) for r in s.scalars(select(KeyEpoch).order_by(KeyEpoch.seq))]

    def epoch(self, seq: int) -> Epoch | None:
        with self.sessions() as s:
            row = s.get(KeyEpoch, seq)
            return None if row is None else Epoch.of(row)

    def unreadable_by(self, epoch: Epoch, *, now: datetime) -> datetime:
        """When every copy of a key destroyed now, during `epoch`, is unreadable at the
        latest: the epoch's start plus the window (epochs end every half window), and never
        less than half a window from now (an epoch already due for rotation, such as one
        begun under a clock set in the past, ends at the workers' next pass)."""
        return max(epoch.started_at + self.window, now + self.window / 2)

    def epoch_subkey(self, epoch_id: str, purpose: str) -> bytes:
        """A key derived from an epoch key (HKDF-SHA-256, RFC 5869) for one purpose: it
        dies with the epoch, so what it keyed (an email index in a backup) stops answering
        guesses once the epoch is destroyed."""
        cached = self._subkeys.get((epoch_id, purpose))
        if cached is not None and epoch_id in self.source.epoch_ids():
            return cached
        key = crypto.derive_key(self.source.epoch_key(epoch_id), info=purpose.encode())
        held = set(self.source.epoch_ids())
        self._subkeys = {k: v for k, v in self._subkeys.items() if k[0] in held}
        self._subkeys[(epoch_id, purpose)] = key
        return key

    def _kek(self, epoch_id: str | None, master_key_id: str | None) -> bytes:
        if epoch_id is not None:
            return self.source.epoch_key(epoch_id)
        if master_key_id is None:
            raise KeyUnavailable("A profile key has no wrapping key.")
        return self.source.key(master_key_id)

    def wrapping_key(self, *, epoch_id: str | None, master_key_id: str | None) -> bytes:
        """The key that wraps a `profile_keys` row's keys: its epoch's, or (rows from before
        key epochs) a master key."""
        return self._kek(epoch_id, master_key_id)

    def unwrap_items_key(self, row: Any) -> bytes:
        """The item-wrapping key of a `profile_keys` row (the profile key itself for rows
        from before key epochs)."""
        kek = self._kek(row.epoch_id, row.master_key_id)
        if row.items_wrapped is None:
            return crypto.unwrap_key(
                kek, row.wrapped, context=profile_context(row.household_id, row.profile_id)
            )
        return crypto.unwrap_key(
            kek, row.items_wrapped, context=items_context(row.household_id, row.profile_id)
        )

    def unwrap_profile_row(self, row: Any) -> tuple[bytes, bytes]:
        """(profile key, item-wrapping key) of a `profile_keys` row."""
        kek = self._kek(row.epoch_id, row.master_key_id)
        profile_key = crypto.unwrap_key(
            kek, row.wrapped, context=profile_context(row.household_id, row.profile_id)
        )
        if row.items_wrapped is None:
            return profile_key, profile_key
        items_key = crypto.unwrap_key(
            kek, row.items_wrapped, context=items_context(row.household_id, row.profile_id)
        )
        return profile_key, items_key

    # --- profile and item keys ----------------------------------------------------------

    def create_profile_key(
        self, *, household_id: uuid.UUID, profile_id: uuid.UUID, now: datetime
    ) -> bytes:
        """A new profile's key (and its item-wrapping key), wrapped under the current epoch.

        Written only while that epoch is still current, so no key is ever wrapped under an
        epoch that a rotation has already moved past.
        """
        key, items_key = crypto.new_key(), crypto.new_key()
        for _ in range(_ATTEMPTS):
            epoch = self.current_epoch(now=now)
            kek = self.source.epoch_key(epoch.id)
            values = {
                "household_id": literal(household_id, ProfileKey.household_id.type),
                "profile_id": literal(profile_id, ProfileKey.profile_id.type),
                "wrapped": literal(
                    crypto.wrap_key(kek, key, context=profile_context(household_id, profile_id)),
                    Binary,
                ),
                "epoch_id": literal(epoch.id),
                "items_wrapped": literal(
                    crypto.wrap_key(
                        kek, items_key, context=items_context(household_id, profile_id)
                    ),
                    Binary,
                ),
                "generation": literal(0),
                "rekey_due": literal(False),
                "legacy": literal(False),
                "created_at": literal(now, UTCDateTime),
            }
            still_current = exists().where(
                KeyEpoch.id == epoch.id, KeyEpoch.state == EpochState.CURRENT
            )
            with self._engine.begin() as conn:
                if _insert_if(conn, ProfileKey, values, still_current):
                    return key
        raise ServiceUnavailable("The key epoch kept changing; try again.", code="key_epoch")

    def profile_key(self, *, household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
        for attempt in range(2):
            with self.sessions() as s:
                row = s.get(ProfileKey, (household_id, profile_id))
                if row is None:
                    raise KeyUnavailable("This profile's key has been destroyed.")
            try:
                return self.unwrap_profile_row(row)[0]
            except KeyUnavailable:
                # A rotation may have re-wrapped the row and destroyed its epoch since we
                # read it: read it once more.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def legacy_profiles(
        self, *, household_id: uuid.UUID, profile_ids: Iterable[uuid.UUID] | None = None
    ) -> bool:
        """Whether any of these profiles (all of the household's: None) has keys from before
        key epochs, whose older copies the epochs alone do not make unreadable."""
        query = select(func.count()).where(
            ProfileKey.household_id == household_id,
            (ProfileKey.legacy.is_(True)) | ProfileKey.epoch_id.is_(None),
        )
        if profile_ids is not None:
            query = query.where(ProfileKey.profile_id.in_(list(profile_ids)))
        with self.sessions() as s:
            return bool(s.scalar(query))

    def create_item_key(
        self,
        *,
        household_id: uuid.UUID,
        profile_id: uuid.UUID,
        item_id: uuid.UUID,
        now: datetime,
    ) -> bytes:
        """A fresh key for a new item, wrapped under its profile's item-wrapping key.

        Core statements, not the ORM's unit of work: this runs once per upload. The key is
        written only under the generation of the item-wrapping key it was wrapped with, so
        it can never land under a key that a rotation has just replaced. On PostgreSQL the
        profile's row is also held `FOR SHARE` until the insert commits.
        """
        key = crypto.new_key()
        query = select(*PROFILE_ROW).where(
            ProfileKey.household_id == household_id, ProfileKey.profile_id == profile_id
        )
        if self.postgresql:
            query = query.with_for_update(read=True)
        for _ in range(_ATTEMPTS):
            with self._upload_connection() as conn:
                row = conn.execute(query).one_or_none()
                if row is None:
                    raise KeyUnavailable("This profile's key has been destroyed.")
                try:
                    items_key = self.unwrap_items_key(row)
                except KeyUnavailable:
                    continue
                values = {
                    "household_id": literal(household_id, ItemKey.household_id.type),
                    "item_id": literal(item_id, ItemKey.item_id.type),
                    "profile_id": literal(profile_id, ItemKey.profile_id.type),
                    "wrapped": literal(
                        crypto.wrap_key(
                            items_key, key, context=item_context(household_id, item_id)
                        ),
                        Binary,
                    ),
                    "created_at": literal(now, UTCDateTime),
                }
                same_generation = exists().where(
                    ProfileKey.household_id == household_id,
                    ProfileKey.profile_id == profile_id,
                    ProfileKey.generation == row.generation,
                )
                if _insert_if(conn, ItemKey, values, same_generation):
                    return key
        raise ServiceUnavailable("The profile's keys kept changing; try again.", code="key_epoch")

    def _upload_connection(self) -> AbstractContextManager[Connection]:
        """A transaction on PostgreSQL (the row lock lasts until the insert commits); on
        SQLite, autocommit statements (writes are serialised, the guard does the rest)."""
        if self.postgresql:
            return self._engine.begin()
        return self._autocommit.connect()

    def item_key(self, *, household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
        query = (
            select(
                ItemKey.wrapped.label("item_wrapped"),
                ProfileKey.household_id,
                ProfileKey.profile_id,
                ProfileKey.wrapped,
                ProfileKey.epoch_id,
                ProfileKey.master_key_id,
                ProfileKey.items_wrapped,
            )
            .join(
                ProfileKey,
                (ProfileKey.household_id == ItemKey.household_id)
                & (ProfileKey.profile_id == ItemKey.profile_id),
            )
            .where(ItemKey.household_id == household_id, ItemKey.item_id == item_id)
        )
        for attempt in range(2):
            with self._autocommit.connect() as conn:
                row = conn.execute(query).one_or_none()
            if row is None:
                raise KeyUnavailable("This item's key has been destroyed.")
            try:
                items_key = self.unwrap_items_key(row)
            except KeyUnavailable:
                if attempt:
                    raise
                continue
            return crypto.unwrap_key(
                items_key, row.item_wrapped, context=item_context(household_id, item_id)
            )
        raise AssertionError("unreachable")

    def destroy_item_keys(self, *, household_id: uuid.UUID, item_ids: Iterable[uuid.UUID]) -> int:
        """Destroy some items' keys; their profiles' item-wrapping keys are marked for
        replacement in the same transaction, so the next epoch leaves no live key that
        unwraps an old copy of the destroyed ones (S6)."""
        ids = list(item_ids)
        if not ids:
            return 0
        with self.sessions() as s:
            owners = (
                select(ItemKey.profile_id)
                .where(ItemKey.household_id == household_id, ItemKey.item_id.in_(ids))
                .distinct()
            )
            s.execute(
                update(ProfileKey)
                .where(ProfileKey.household_id == household_id, ProfileKey.profile_id.in_(owners))
                .values(rekey_due=True)
                .execution_options(synchronize_session=False)
            )
            result = s.execute(
                delete(ItemKey).where(
                    ItemKey.household_id == household_id, ItemKey.item_id.in_(ids)
                )
            )
            s.commit()
        purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

    def destroy_profile_key(
        self, *, household_id: uuid.UUID, profile_id: uuid.UUID, items: bool = True
    ) -> bool:
        """Destroy a profile's keys, then (unless `items` is False) its items' keys.

        The profile's row goes in a transaction of its own, first: once it commits every
        item key under it is unusable, so the profile is unreadable at once (S6) however
        many items it has. The erasure engine leaves the item keys for its `rows` step
        (`destroy_item_keys_of`), so the first step's time does not grow with the items.
        """
        with self.sessions() as s:
            result = s.execute(
                delete(ProfileKey).where(
                    ProfileKey.household_id == household_id, ProfileKey.profile_id == profile_id
                )
            )
            s.commit()
        if items:
            self.destroy_item_keys_of(household_id=household_id, profile_id=profile_id)
        else:
            purge_journal(self._engine)
        return bool(getattr(result, "rowcount", 0))

    def destroy_household_keys(self, *, household_id: uuid.UUID, items: bool = True) -> int:
        """Destroy every profile key of a household (account closure, C10), then (unless
        `items` is False) every item key, unusable from the first commit on."""
        with self.sessions() as s:
            result = s.execute(delete(ProfileKey).where(ProfileKey.household_id == household_id))
            s.commit()
        if items:
            self.destroy_item_keys_of(household_id=household_id)
        else:
            purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

    def destroy_item_keys_of(
        self, *, household_id: uuid.UUID, profile_id: uuid.UUID | None = None
    ) -> int:
        """Every item key of a household, or of one of its profiles: one statement."""
        query = delete(ItemKey).where(ItemKey.household_id == household_id)
        if profile_id is not None:
            query = query.where(ItemKey.profile_id == profile_id)
        with self.sessions() as s:
            result = s.execute(query)
            s.commit()
        purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

    def destroy_item_key_pairs(self, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> int:
        """Destroy the keys of items named by (household, item), across households (a
        batch): one UPDATE marking their profiles for a new item-wrapping key (as
        `destroy_item_keys`) and one DELETE, in one transaction, whatever the number."""
        named = list(pairs)
        if not named:
            return 0
        which = pair_in(ItemKey.household_id, ItemKey.item_id, named, postgresql=self.postgresql)
        with self.sessions() as s:
            owners = select(ItemKey.household_id, ItemKey.profile_id).where(which).distinct()
            s.execute(
                update(ProfileKey)
                .where(tuple_(ProfileKey.household_id, ProfileKey.profile_id).in_(owners))
                .values(rekey_due=True)
                .execution_options(synchronize_session=False)
            )
            result = s.execute(delete(ItemKey).where(which))
            s.commit()
        purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

    def remaining_item_keys(self, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> int:
        """How many of these (household, item) keys are left (the remnant check, A8)."""
        named = list(pairs)
        if not named:
            return 0
        which = pair_in(ItemKey.household_id, ItemKey.item_id, named, postgresql=self.postgresql)
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(ItemKey).where(which)) or 0)

    def legacy_among(self, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> bool:
        """`legacy_profiles` for (household, profile) pairs across households (a batch)."""
        named = sorted(set(pairs))
        if not named:
            return False
        which = pair_in(
            ProfileKey.household_id, ProfileKey.profile_id, named, postgresql=self.postgresql
        )
        query = select(func.count()).where(
            which, (ProfileKey.legacy.is_(True)) | ProfileKey.epoch_id.is_(None)
        )
        with self.sessions() as s:
            return bool(s.scalar(query))

    def remaining_keys(
        self,
        *,
        household_id: uuid.UUID,
        profile_ids: Iterable[uuid.UUID] | None = None,
        item_ids: Iterable[uuid.UUID] | None = None,
    ) -> int:
        """How many keys are left for a household, some of its profiles, or some items.

        With neither filter, every key of the household counts. For the remnant check (A8).
        """
        profiles = None if profile_ids is None else list(profile_ids)
        items = None if item_ids is None else list(item_ids)
        total = 0
        with self.sessions() as s:
            if items is None:
                q = select(func.count()).select_from(ProfileKey)
                q = q.where(ProfileKey.household_id == household_id)
                if profiles is not None:
                    q = q.where(ProfileKey.profile_id.in_(profiles))
                total += int(s.scalar(q) or 0)
                q = select(func.count()).select_from(ItemKey)
                q = q.where(ItemKey.household_id == household_id)
                if profiles is not None:
                    q = q.where(ItemKey.profile_id.in_(profiles))
                total += int(s.scalar(q) or 0)
                return total
            for start in range(0, len(items), 500):
                total += int(
                    s.scalar(
                        select(func.count())
                        .select_from(ItemKey)
                        .where(
                            ItemKey.household_id == household_id,
                            ItemKey.item_id.in_(items[start : start + 500]),
                        )
                    )
                    or 0
                )
        return total

    # --- the service's own keys ---------------------------------------------------------

    def service_key(self, name: str, *, now: datetime) -> bytes:
        """A key of the service's own (not a subject's), made on first use and cached.

        Two processes (or threads) asking first at once both find no row: one insert
        wins, and the other reads the winner's key, so everyone uses the same one.
        """
        if name in self._service_keys:
            return self._service_keys[name]
        for _ in range(2):
            with self.sessions() as s:
                row = s.get(ServiceKey, name)
                if row is not None:
                    key = crypto.unwrap_key(
                        self.source.key(row.master_key_id),
                        row.wrapped,
                        context=service_context(name),
                    )
                    break
                key = crypto.new_key()
                master_id = self.source.current_id()
                s.add(
                    ServiceKey(
                        name=name,
                        wrapped=crypto.wrap_key(
                            self.source.key(master_id), key, context=service_context(name)
                        ),
                        master_key_id=master_id,
                        created_at=now,
                    )
                )
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()  # another caller made it first: read theirs
                    continue
                break
        else:
            raise ServiceUnavailable(
                "A service key could not be made; try again.", code="key_store"
            )
        self._service_keys[name] = key
        return key
