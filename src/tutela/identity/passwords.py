"""Password hashing with argon2id (NIST SP 800-63B §5.1.1.2; OWASP: ≥ 19 MiB, 2 passes; S3)."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHasher:
    """argon2id with parameters from settings; flags hashes made with older parameters."""

    def __init__(
        self,
        *,
        time_cost: int = 2,
        memory_kib: int = 19_456,
        parallelism: int = 1,
        max_concurrent: int = 4,
    ) -> None:
        if memory_kib < 19_456 or time_cost < 2:
            raise ValueError("argon2id below OWASP's minimum (19 MiB, 2 passes)")
        self._argon = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # A flood of sign-ins must not take every worker thread (or 19 MiB each) at once.
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # Unknown accounts are checked against this, so they cost the same time (S4).
        self._dummy = self._argon.hash("tutela-dummy-password-for-timing")

    def hash(self, password: str) -> str:
        with self._slots:
            return self._argon.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches; an unknown account (None) still pays for a hash."""
        with self._slots:
            try:
                return self._argon.verify(stored or self._dummy, password) and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored: str) -> bool:
        return self._argon.check_needs_rehash(stored)
