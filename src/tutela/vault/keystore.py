"""The key store: profile and item keys, wrapped, in a database apart from the main one.

A restored backup of the main database, or a stale replica of it, therefore holds only
ciphertext. Destroying a key here is a cryptographic erase (NIST SP 800-88, S6): the
data it protected is unreadable at once, wherever its ciphertext lies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from tutela.core.errors import KeyUnavailable
from tutela.db.engine import purge_journal
from tutela.vault import crypto
from tutela.vault.keysource import KeySource
from tutela.vault.models import ItemKey, ProfileKey, ServiceKey

EMAIL_INDEX_KEY = "email-index"


def _profile_context(household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
    return b"tutela:profile-key:" + household_id.bytes + profile_id.bytes


def _item_context(household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
    return b"tutela:item-key:" + household_id.bytes + item_id.bytes


def _service_context(name: str) -> bytes:
    return b"tutela:service-key:" + name.encode()


@dataclass(frozen=True)
class RotationResult:
    new_master_key_id: str
    rewrapped: int
    retired: list[str]


class KeyStore:
    """Creates, unwraps and destroys keys. Each call is its own short transaction."""

    def __init__(self, sessions: sessionmaker[Session], source: KeySource) -> None:
        self.sessions = sessions
        self.source = source
        # Per-upload and per-read statements are single statements, each atomic alone:
        # autocommit spares them a BEGIN and a COMMIT round trip.
        self._engine: Engine = sessions.kw["bind"]
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._service_keys: dict[str, bytes] = {}

    def create_profile_key(
        self, *, household_id: uuid.UUID, profile_id: uuid.UUID, now: datetime
    ) -> bytes:
        key = crypto.new_key()
        master_id = self.source.current_id()
        wrapped = crypto.wrap_key(
            self.source.key(master_id), key, context=_profile_context(household_id, profile_id)
        )
        with self.sessions() as s:
            s.add(
                ProfileKey(
                    household_id=household_id,
                    profile_id=profile_id,
                    wrapped=wrapped,
                    master_key_id=master_id,
                    created_at=now,
                )
            )
            s.commit()
        return key

    def profile_key(self, *, household_id: uuid.UUID, profile_id: uuid.UUID) -> bytes:
        with self.sessions() as s:
            row = s.get(ProfileKey, (household_id, profile_id))
            if row is None:
                raise KeyUnavailable("This profile's key has been destroyed.")
            return crypto.unwrap_key(
                self.source.key(row.master_key_id),
                row.wrapped,
                context=_profile_context(household_id, profile_id),
            )

    def create_item_key(
        self,
        *,
        household_id: uuid.UUID,
        profile_id: uuid.UUID,
        item_id: uuid.UUID,
        now: datetime,
    ) -> bytes:
        """A fresh key for a new item, wrapped under its profile's key.

        Core statements, not the ORM's unit of work: this runs once per upload.
        """
        key = crypto.new_key()
        with self._autocommit.connect() as conn:
            row = conn.execute(
                select(ProfileKey.wrapped, ProfileKey.master_key_id).where(
                    ProfileKey.household_id == household_id, ProfileKey.profile_id == profile_id
                )
            ).one_or_none()
            if row is None:
                raise KeyUnavailable("This profile's key has been destroyed.")
            profile_key = crypto.unwrap_key(
                self.source.key(row.master_key_id),
                row.wrapped,
                context=_profile_context(household_id, profile_id),
            )
            conn.execute(
                insert(ItemKey).values(
                    household_id=household_id,
                    item_id=item_id,
                    profile_id=profile_id,
                    wrapped=crypto.wrap_key(
                        profile_key, key, context=_item_context(household_id, item_id)
                    ),
                    created_at=now,
                )
            )
        return key

    def item_key(self, *, household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
        with self._autocommit.connect() as conn:
            row = conn.execute(
                select(
                    ItemKey.wrapped,
                    ProfileKey.wrapped,
                    ProfileKey.master_key_id,
                    ItemKey.profile_id,
                )
                .join(
                    ProfileKey,
                    (ProfileKey.household_id == ItemKey.household_id)
                    & (ProfileKey.profile_id == ItemKey.profile_id),
                )
                .where(ItemKey.household_id == household_id, ItemKey.item_id == item_id)
            ).one_or_none()
        if row is None:
            raise KeyUnavailable("This item's key has been destroyed.")
        item_wrapped, profile_wrapped, master_id, profile_id = row
        profile_key = crypto.unwrap_key(
            self.source.key(master_id),
            profile_wrapped,
            context=_profile_context(household_id, profile_id),
        )
        return crypto.unwrap_key(
            profile_key, item_wrapped, context=_item_context(household_id, item_id)
        )

    def destroy_item_keys(self, *, household_id: uuid.UUID, item_ids: Iterable[uuid.UUID]) -> int:
        ids = list(item_ids)
        if not ids:
            return 0
        with self.sessions() as s:
            result = s.execute(
                delete(ItemKey).where(
                    ItemKey.household_id == household_id, ItemKey.item_id.in_(ids)
                )
            )
            s.commit()
        purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

    def destroy_profile_key(self, *, household_id: uuid.UUID, profile_id: uuid.UUID) -> bool:
        """Destroy a profile's key, then its items' keys (and any orphan among them).

        The profile key goes in a transaction of its own, first: once it commits every
        item key under it is unusable, so the profile is unreadable at once (S6) however
        many items it has.
        """
        with self.sessions() as s:
            result = s.execute(
                delete(ProfileKey).where(
                    ProfileKey.household_id == household_id, ProfileKey.profile_id == profile_id
                )
            )
            s.commit()
        with self.sessions() as s:
            s.execute(
                delete(ItemKey).where(
                    ItemKey.household_id == household_id, ItemKey.profile_id == profile_id
                )
            )
            s.commit()
        purge_journal(self._engine)
        return bool(getattr(result, "rowcount", 0))

    def destroy_household_keys(self, *, household_id: uuid.UUID) -> int:
        """Destroy every profile and item key of a household (account closure, C10)."""
        with self.sessions() as s:
            result = s.execute(delete(ProfileKey).where(ProfileKey.household_id == household_id))
            s.commit()
        with self.sessions() as s:
            s.execute(delete(ItemKey).where(ItemKey.household_id == household_id))
            s.commit()
        purge_journal(self._engine)
        return int(getattr(result, "rowcount", 0) or 0)

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
        from sqlalchemy import func  # noqa: PLC0415

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

    def service_key(self, name: str, *, now: datetime) -> bytes:
        """A key of the service's own (not a subject's), made on first use and cached."""
        if name in self._service_keys:
            return self._service_keys[name]
        with self.sessions() as s:
            row = s.get(ServiceKey, name)
            if row is None:
                key = crypto.new_key()
                master_id = self.source.current_id()
                s.add(
                    ServiceKey(
                        name=name,
                        wrapped=crypto.wrap_key(
                            self.source.key(master_id), key, context=_service_context(name)
                        ),
                        master_key_id=master_id,
                        created_at=now,
                    )
                )
                s.commit()
            else:
                key = crypto.unwrap_key(
                    self.source.key(row.master_key_id), row.wrapped, context=_service_context(name)
                )
        self._service_keys[name] = key
        return key

    def _rewrap_batches(self, new_id: str, new_key: bytes, batch_size: int) -> int:
        rewrapped = 0
        while True:
            with self.sessions() as s:
                rows = s.scalars(
                    select(ProfileKey).where(ProfileKey.master_key_id != new_id).limit(batch_size)
                ).all()
                if not rows:
                    break
                for row in rows:
                    ctx = _profile_context(row.household_id, row.profile_id)
                    key = crypto.unwrap_key(
                        self.source.key(row.master_key_id), row.wrapped, context=ctx
                    )
                    row.wrapped = crypto.wrap_key(new_key, key, context=ctx)
                    row.master_key_id = new_id
                rewrapped += len(rows)
                s.commit()
        with self.sessions() as s:
            for svc in s.scalars(select(ServiceKey).where(ServiceKey.master_key_id != new_id)):
                ctx = _service_context(svc.name)
                key = crypto.unwrap_key(
                    self.source.key(svc.master_key_id), svc.wrapped, context=ctx
                )
                svc.wrapped = crypto.wrap_key(new_key, key, context=ctx)
                svc.master_key_id = new_id
                rewrapped += 1
            s.commit()
        return rewrapped

    def rotate_master(self, *, batch_size: int = 500) -> RotationResult:
        """Re-wrap every profile and service key under a new master key, then retire the old.

        Blobs and item keys are untouched: only the top of the hierarchy changes. Each batch
        commits on its own; if the rotation stops part-way, running it again finishes it,
        and the old master key is retired only once nothing is wrapped under it any more.
        """
        held = self.source.key_ids()
        new_id = self.source.current_id() if len(held) > 1 else self.source.begin_rotation()
        new_key = self.source.key(new_id)
        rewrapped = 0
        while True:
            # Re-wrap until nothing is left under an old key: an API process may have
            # wrapped a new profile key under the old master just before it saw the new.
            rewrapped += self._rewrap_batches(new_id, new_key, batch_size)
            with self.sessions() as s:
                in_use = set(s.scalars(select(ProfileKey.master_key_id).distinct()))
                in_use |= set(s.scalars(select(ServiceKey.master_key_id).distinct()))
            if in_use <= {new_id}:
                break
        retired = []
        for old_id in self.source.key_ids():
            if old_id != new_id and old_id not in in_use:
                self.source.retire(old_id)
                retired.append(old_id)
        return RotationResult(new_master_key_id=new_id, rewrapped=rewrapped, retired=retired)
