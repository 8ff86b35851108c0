"""Whether a notice speaks to or of an erased subject: such a notice is never sent (S8).

A restored backup of the main database brings back outbox rows queued before an erasure,
and the keys of a recipient who was not erased still open them: an unsent notice naming
an erased child would be mailed again. The tombstones in the key store (keyed digests of
every erased household, account and profile) outlive any restore, so delivery looks the
notice's household, recipient account and subject profile up there first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from tutela.db.engine import Stores
from tutela.erasure.erased import any_erased
from tutela.notices.models import OutboxMessage
from tutela.vault.keystore import KeyStore

ERASED: Final = "subject_erased"
"""`last_error` of a notice refused because whom it is to or about was erased."""


def erased(stores: Stores, keys: KeyStore, row: OutboxMessage, *, now: datetime) -> bool:
    """True when the notice's household, recipient account or subject profile was erased.
    A notice to an employee or to the security team names no such subject."""
    named: list[tuple[str, uuid.UUID]] = [
        (kind, value)
        for kind, value in (
            ("household", row.household_id),
            ("account", row.account_id),
            ("profile", row.about_profile_id),
        )
        if value is not None
    ]
    return any_erased(stores, keys, named, now=now)
