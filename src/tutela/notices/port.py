"""What other parts need of notices beyond queueing one: delivery, and forgetting copies.

The erasure engine takes a `Notices`: it delivers a closing household's notices before
the household's keys go (after that, no address or parameter can be opened), and it
discards the mailed copies of the notices it erases, then asks whether any is still held
(A5, A8, C1). `OutboxNotices` is the real one, over the outbox and a `Mailer`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from tutela.db.engine import Stores
from tutela.notices.mail import Mailer
from tutela.notices.service import DeliveryReport, NoticeKind, deliver_pending
from tutela.settings import Settings
from tutela.vault.keystore import KeyStore


class Notices(Protocol):
    def deliver_household(
        self, *, household_id: uuid.UUID, kinds: Collection[NoticeKind], now: datetime
    ) -> DeliveryReport:
        """Try the household's pending notices of `kinds` now, once each. Never waits for
        a mail server to come back: what fails is counted, and stays queued."""
        ...

    def discard(self, references: Collection[str]) -> int:
        """Remove the mailed copies of these notices that Tutela keeps; how many."""
        ...

    def held(self, references: Collection[str]) -> set[str]:
        """Which of these notices Tutela still keeps a mailed copy of."""
        ...


class OutboxNotices:
    """Notices over the outbox tables and one mailer (SMTP or `.eml` files)."""

    def __init__(self, stores: Stores, keys: KeyStore, mailer: Mailer, settings: Settings) -> None:
        self.stores = stores
        self.keys = keys
        self.mailer = mailer
        self.settings = settings

    def deliver_due(self, *, now: datetime) -> DeliveryReport:
        """Send what is due (after a request, and in each worker pass)."""
        return deliver_pending(self.stores, self.keys, self.mailer, self.settings, now=now)

    def deliver_household(
        self, *, household_id: uuid.UUID, kinds: Collection[NoticeKind], now: datetime
    ) -> DeliveryReport:
        return deliver_pending(
            self.stores,
            self.keys,
            self.mailer,
            self.settings,
            now=now,
            household_id=household_id,
            kinds=kinds,
        )

    def discard(self, references: Collection[str]) -> int:
        return self.mailer.discard(references)

    def held(self, references: Collection[str]) -> set[str]:
        return self.mailer.held(references)
