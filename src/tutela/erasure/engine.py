"""The erasure engine: the one path through which everything in Tutela is deleted.

A request becomes a durable job whose planned steps run in order (DESIGN idea 2):

1. `mark`: the scope is under erasure. From here its reads and its ingestion are
   refused. For an item scope or a batch, the items are read and fingerprinted here;
   for a profile or a household nothing is read yet, so what follows takes constant time.
2. `keys`: keys are destroyed first, so the data is unreadable at once, everywhere
   (cryptographic erase, NIST SP 800-88: S6): the profile key for a profile, every
   profile key of a household (their items' keys are wrapped under them), item keys for
   item scopes and batches.
3. `collect`: for a profile or a household, the rows are read and fingerprinted: what
   the receipt counts and the remnant check looks for.
4. `blobs`, 5. `derived`, 6. `rows`: the ciphertext itself goes, derived artifacts
   (transcripts, thumbnails) before the items they came from, then the rows and the
   remaining item keys.
7. `downstream`: lineage hooks and every registered consumer are told (S7).
8. `tombstones`: keyed digests of what was erased, in the key store, so a restored
   backup can be cleaned again (S8).
9. `verify`: the remnant check looks in every store; only if it finds nothing is the
   request complete, with a signed receipt (A8). If it finds something, the steps run
   again from `keys`.

The ids travel with the job (sealed in its fingerprints): no step runs the scope's query
again. A batch job (`request_batch`) erases up to `erasure_batch_size` items across
profiles and households with one statement per table and step, one remnant check and
one receipt, which counts each subject under its keyed digest (A6, C9).

A job that cannot finish (a step failing `MAX_STEP_ATTEMPTS` times in a row, or the
remnant check unclean `MAX_VERIFY_FAILURES` times) is `failed`: still open, held to its
deadline, and the privacy team is told. An operator fixes the fault and runs it again
(`retry`, or a new request for the same subject). The modules: `intake` (requests),
`lease` (claims and step records), `pipeline` (the runner), `steps`, `removal` and
`completion` (the steps), `receipts`, `deadlines` and `late`.
Obligations: A5, A6, A8, C1, C6, C9, C10, S6, S7, S8.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from tutela.core.clock import Clock
from tutela.core.ids import uuid7
from tutela.db import registry  # noqa: F401 (every part's tables in Base.metadata)
from tutela.db.engine import Stores
from tutela.erasure import downstream, intake, late, pipeline, recovery
from tutela.erasure.jobs import OPEN, Job, Report, StepHook
from tutela.erasure.lease import Leases
from tutela.erasure.models import ErasureRequest, Step
from tutela.erasure.scope import ERASURE_KEY, BatchOutcome, Member, Requester, Scope
from tutela.erasure.wake import Wakeup, wakeup_for
from tutela.notices.mail import mailer_from_settings
from tutela.notices.port import Notices, OutboxNotices
from tutela.settings import Settings
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore
from tutela.vault.service import Vault

log = logging.getLogger("tutela.erasure")
__all__ = ["OPEN", "ErasureEngine", "Report"]


class ErasureEngine:
    """Requests erasures and runs their jobs. One per process; safe across processes."""

    def __init__(
        self,
        stores: Stores,
        vault: Vault,
        settings: Settings,
        clock: Clock,
        *,
        worker_id: str | None = None,
        sender: downstream.WebhookSender | None = None,
        lineage_hooks: Sequence[downstream.LineageHook] = (),
        after_step: StepHook | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.stores = stores
        self.vault = vault
        self.settings = settings
        self.clock = clock
        self.worker_id = (
            worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid7().hex[-6:]}"
        )
        self.sender = sender or downstream.HttpSender(settings.webhook_timeout_seconds)
        self.lineage_hooks = list(lineage_hooks)
        self.after_step = after_step
        # Delivers a closing household's notices before its keys go; discards the mailed
        # copies of notices it erases (A5, C6).
        self.notices = notices or OutboxNotices(
            stores, vault.keys, mailer_from_settings(settings), settings
        )
        self.postgresql = stores.main.dialect.name == "postgresql"
        self.wakeup: Wakeup = wakeup_for(stores.main)  # work arrived: wake a worker (wake.py)
        self.leases = Leases(
            stores,
            vault.keys,
            clock,
            self.worker_id,
            timedelta(seconds=settings.erasure_lease_seconds),
            wakeup=self.wakeup,
        )
        self.step_functions = dict(pipeline.STEP_FUNCTIONS)

    @property
    def keys(self) -> KeyStore:
        return self.vault.keys

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        hold: intake.Hold | None = None,
        deadline: datetime | None = None,
        wake: bool = True,
    ) -> ErasureRequest:
        """Record an erasure request; see `intake.request`."""
        return intake.request(
            self,
            scope,
            requester,
            idempotency_key=idempotency_key,
            hold=hold,
            deadline=deadline,
            wake=wake,
        )

    def request_batch(
        self,
        members: Sequence[Member],
        requester: Requester,
        *,
        hold: intake.Hold | None = None,
    ) -> BatchOutcome:
        """Request the erasure of `members` (items named one by one, across profiles and
        households) as batch jobs of up to `erasure_batch_size` items each; members under
        a legal hold are left out and counted (A6, C9). See `intake.request_batch`."""
        return intake.request_batch(self, members, requester, hold=hold)

    def idempotent(self, ref: str, idempotency_key: str, scope: Scope) -> ErasureRequest | None:
        """The request this requester made with this key, if any; see `intake.idempotent`."""
        return intake.idempotent(self, ref, idempotency_key, scope)

    def start(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        hold: intake.Hold | None = None,
    ) -> ErasureRequest:
        """Request an erasure and destroy its keys before returning; see `intake.start`."""
        return intake.start(self, scope, requester, idempotency_key=idempotency_key, hold=hold)

    def seal(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.seal(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    def open(self, data: bytes, what: str, *, now: datetime) -> bytes:
        return crypto.open_sealed(
            self.keys.service_key(ERASURE_KEY, now=now), data, aad=f"tutela:erasure:{what}".encode()
        )

    # --- running -------------------------------------------------------------------------

    def run_request(self, request_id: uuid.UUID, *, until: Step | None = None) -> str | None:
        """Claim this request if it is free and run it (up to `until`, inclusive)."""
        if self.leases.claim(request_id) is None:
            return None
        return pipeline.run(self, request_id, until=until)

    def run_pending(self, *, limit: int = 10) -> Report:
        """Claim and run due jobs, one after another; what a worker pass does."""
        return pipeline.run_pending(self, limit=limit)

    def load(self, request_id: uuid.UUID) -> Job:
        return pipeline.load(self, request_id)

    def retry(self, request_id: uuid.UUID, *, by: str) -> ErasureRequest:
        """Run a failed (or blocked) request again; see `recovery.retry`."""
        return recovery.retry(self, request_id, by=by)

    # --- deadlines -----------------------------------------------------------------------

    def check_deadlines(self) -> int:
        """Warn once per request at 80% of its completion limit (S7, S8); returns how many
        (`late.warn_late`)."""
        return late.warn_late(self.stores, self.keys, self.settings, now=self.clock.now())

    def retry_downstream(self) -> int:
        """Deliver due downstream retries (worker pass); waiting jobs then move on."""
        return downstream.deliver_due(self.stores, self.keys, self.sender, now=self.clock.now())
