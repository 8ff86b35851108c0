"""A running erasure job: its request row, its scope, and what it set out to erase."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tutela.erasure.models import ErasureRequest, RequestStatus, Step
from tutela.erasure.scope import Scope

CHUNK = 500
MAX_VERIFY_FAILURES = 3
MAX_STEP_ATTEMPTS = 20
MAX_FINGERPRINT_IDS = 200_000
MAX_SAMPLES = 48
SAMPLE_BYTES = 24
OPEN = (
    RequestStatus.PENDING,
    RequestStatus.RUNNING,
    RequestStatus.BLOCKED,
    RequestStatus.FAILED,
)
"""Not done yet: listed as open, warned about and held to its deadline (S7, S8), and what
a new request for the same subject answers. A failed request is open until it completes."""
CLAIMABLE = (RequestStatus.PENDING, RequestStatus.RUNNING)
"""What a worker picks up by itself. Blocked and failed requests wait for an operator
(`tutela erasure retry-dead`, `tutela erasure retry`)."""
RETRYABLE = (RequestStatus.FAILED, RequestStatus.BLOCKED)
"""What `retry` runs again."""

# Tables whose rows are the erasure's own record: kept (their personal columns are
# wiped or nulled), never deleted with the household.
RECORD_TABLES = frozenset({"erasure_requests", "downstream_deliveries", "audit_events"})


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Fingerprints:
    """What the job erases and what the remnant check looks for, sealed on the row."""

    subject_ids: list[str] = field(default_factory=list)
    profile_ids: list[str] = field(default_factory=list)
    account_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    blob_keys: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # Keys from before key epochs were among those erased: no time bounds their copies.
    legacy_keys: bool = False
    notices: list[str] = field(default_factory=list)
    """Outbox ids of the notices erased with the subject: their mailed copies' references."""
    members: list[list[str]] = field(default_factory=list)
    """For item scopes and batches: each item as [household, profile, item] (hex), with
    its derived artifacts; the ids every later step works on, so no step runs the scope's
    query again."""
    subjects: dict[str, dict[str, int]] = field(default_factory=dict)
    """For a batch: counts by kind per profile, under the profile's keyed digest."""
    collected: bool = False
    """Whether the rows were read and fingerprinted (`collect`; `mark` for item scopes)."""

    def pairs(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(household, item) of every member: the items' primary keys."""
        return [(uuid.UUID(h), uuid.UUID(i)) for h, _, i in self.members]

    def by_household(self) -> dict[uuid.UUID, list[uuid.UUID]]:
        groups: dict[uuid.UUID, list[uuid.UUID]] = {}
        for h, _, i in self.members:
            groups.setdefault(uuid.UUID(h), []).append(uuid.UUID(i))
        return groups

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Fingerprints:
        return cls(**json.loads(raw))

    def sample(self, value: bytes | None) -> None:
        if value and len(self.samples) < MAX_SAMPLES and len(value) >= SAMPLE_BYTES + 12:
            # Bytes from past the nonce: unique to this ciphertext.
            self.samples.append(base64.b64encode(value[12 : 12 + SAMPLE_BYTES]).decode())


@dataclass
class Job:
    row: ErasureRequest
    scope: Scope
    fp: Fingerprints


@dataclass
class Report:
    """What one pass of the worker did."""

    completed: int = 0
    advanced: int = 0
    waiting: int = 0
    failed: int = 0

    @property
    def progressed(self) -> bool:
        """A job completed or moved on: the next pass may find more at once."""
        return bool(self.completed or self.advanced)


StepHook = Callable[[uuid.UUID, Step], None]
