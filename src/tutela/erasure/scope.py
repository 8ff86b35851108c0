"""What an erasure covers (its scope), who asked for it, and the keyed digests that name
an erased subject without holding its id (A5, S8)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from tutela.core.clock import as_utc
from tutela.core.errors import InvalidInput
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.vault.keystore import KeyStore
from tutela.vault.models import ItemKind

TOMBSTONE_KEY: Final = "tombstones"
"""Service key of the digests that name erased subjects (tombstones, request subjects)."""
ERASURE_KEY: Final = "erasure"
"""Service key sealing a running request's scope and fingerprints."""


@dataclass(frozen=True, order=True)
class Member:
    """One item of a batch erasure, with the household and profile it belongs to."""

    household_id: uuid.UUID
    profile_id: uuid.UUID
    item_id: uuid.UUID


@dataclass(frozen=True)
class Scope:
    """One item (with its derived artifacts); a profile's items by kind, time or id; a
    whole profile; a whole household.

    `items` narrows by `kinds`, a range (`since`, `until`) or ids (`item_ids`, as rules
    name them); with none of them it is every kind of the profile's items up to the
    request: "erase everything about me" for an adult, whose profile signs in to an
    account and so cannot be erased as a profile (C6, C10: the account stays signed in).

    A `batch` names its items one by one (`members`), across profiles and households, and
    has no household of its own (`Scope.batch`).
    """

    kind: ScopeKind
    household_id: uuid.UUID | None
    profile_id: uuid.UUID | None = None
    item_id: uuid.UUID | None = None
    kinds: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    item_ids: tuple[uuid.UUID, ...] = field(default=(), repr=False)
    members: tuple[Member, ...] = field(default=(), repr=False)

    @classmethod
    def batch(cls, members: Iterable[Member]) -> Scope:
        return cls(ScopeKind.BATCH, None, members=tuple(sorted(set(members))))

    @property
    def hh(self) -> uuid.UUID:
        """The household of a scope that has one (every kind but a batch)."""
        assert self.household_id is not None, "a batch has no household of its own"
        return self.household_id

    def __post_init__(self) -> None:
        if (self.kind is ScopeKind.BATCH) != (self.household_id is None):
            raise InvalidInput("Only a batch has no household.", code="invalid_scope")
        if self.kind is ScopeKind.BATCH and not self.members:
            raise InvalidInput("A batch names its items.", code="invalid_scope")
        if self.kind is ScopeKind.ITEM and self.item_id is None:
            raise InvalidInput("An item erasure names its item.", code="invalid_scope")
        if self.kind in (ScopeKind.ITEMS, ScopeKind.PROFILE) and self.profile_id is None:
            raise InvalidInput("This erasure names its profile.", code="invalid_scope")
        if self.item_ids and self.kind is not ScopeKind.ITEMS:
            raise InvalidInput(
                "Only an items erasure names items one by one.", code="invalid_scope"
            )
        for k in self.kinds:
            if k not in set(ItemKind):
                raise InvalidInput(f"Unknown kind of data: {k[:20]!r}.", code="invalid_scope")
        if self.since and self.until and as_utc(self.since) >= as_utc(self.until):
            raise InvalidInput("The range ends before it starts.", code="invalid_scope")

    def subject(self) -> tuple[str, uuid.UUID]:
        """The one subject a tombstone and a receipt name for this scope."""
        if self.kind is ScopeKind.HOUSEHOLD:
            return "household", self.hh
        if self.kind is ScopeKind.BATCH:
            # Named by its first member; the receipt counts every subject under its digest.
            return "batch", self.members[0].item_id
        if self.kind is ScopeKind.ITEM:
            assert self.item_id is not None
            return "item", self.item_id
        assert self.profile_id is not None
        return "profile", self.profile_id

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "household_id": str(self.household_id) if self.household_id else None,
            "profile_id": str(self.profile_id) if self.profile_id else None,
            "item_id": str(self.item_id) if self.item_id else None,
            "kinds": sorted(self.kinds),
            "since": as_utc(self.since).isoformat() if self.since else None,
            "until": as_utc(self.until).isoformat() if self.until else None,
            "item_ids": sorted(str(i) for i in self.item_ids),
            **(
                {
                    "members": [
                        [m.household_id.hex, m.profile_id.hex, m.item_id.hex] for m in self.members
                    ]
                }
                if self.members
                else {}
            ),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scope:
        def _id(v: str | None) -> uuid.UUID | None:
            return uuid.UUID(v) if v else None

        def _at(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            kind=ScopeKind(data["kind"]),
            household_id=_id(data["household_id"]),
            profile_id=_id(data.get("profile_id")),
            item_id=_id(data.get("item_id")),
            kinds=tuple(data.get("kinds") or ()),
            since=_at(data.get("since")),
            until=_at(data.get("until")),
            item_ids=tuple(uuid.UUID(i) for i in data.get("item_ids") or ()),
            members=tuple(
                Member(uuid.UUID(h), uuid.UUID(p), uuid.UUID(i))
                for h, p, i in data.get("members") or ()
            ),
        )

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


@dataclass
class BatchOutcome:
    """What `ErasureEngine.request_batch` did: the requests made, and how many of the
    members a legal hold (or a subject erased meanwhile) kept out of them."""

    requests: list[uuid.UUID] = field(default_factory=list)
    held: int = 0


@dataclass(frozen=True)
class Requester:
    """Who asked: its kind (adult, guardian, a rule, an officer) and a reference."""

    kind: RequesterKind
    ref: str
    """`account:<id>`, `staff:<id>` or `rule:<name>`."""


def digest(keys: KeyStore, subject_kind: str, value: bytes | uuid.UUID, *, now: datetime) -> str:
    """HMAC-SHA256 under the tombstone key: equal subjects match, ids cannot be read back."""
    raw = value.bytes if isinstance(value, uuid.UUID) else value
    key = keys.service_key(TOMBSTONE_KEY, now=now)
    return hmac.new(key, subject_kind.encode() + b":" + raw, hashlib.sha256).hexdigest()


def digests(
    keys: KeyStore, subject_kind: str, ids: Iterable[uuid.UUID], *, now: datetime
) -> dict[str, uuid.UUID]:
    key = keys.service_key(TOMBSTONE_KEY, now=now)
    prefix = subject_kind.encode() + b":"
    return {hmac.new(key, prefix + i.bytes, hashlib.sha256).hexdigest(): i for i in ids}
