"""The government-ID check of verifiable parental consent (C3; 16 CFR 312.5(b)(2)(v)).

An `IdChecker` looks at a photo of an ID document and says whether it shows an adult;
its answer, never the image, is evidence. The image itself is erased through the one
deletion path right after the check (`consent.parental`): COPPA requires a government
ID collected for this to be deleted promptly once verification is done.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from tutela.core.errors import ConfigurationError
from tutela.settings import Settings

ADULT_AGE = 18


@dataclass(frozen=True)
class IdCheck:
    ok: bool
    reference: str
    """The checker's reference of this check (kept as evidence)."""
    reason: str = ""
    """Why it failed: "not_an_adult", "unreadable"."""


class IdChecker(Protocol):
    name: str

    def check_adult(self, image: bytes, media_type: str, *, today: date) -> IdCheck: ...


_DECLARED = re.compile(rb"DOB=(\d{4}-\d{2}-\d{2})")


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


class FakeIdChecker:
    """A stand-in for tests and the demo: it reads a birth date declared in the image's
    bytes (`DOB=YYYY-MM-DD`, e.g. a JPEG comment) and accepts an adult's."""

    name = "fake"

    def check_adult(self, image: bytes, media_type: str, *, today: date) -> IdCheck:
        reference = "fake_id_" + hashlib.sha256(image).hexdigest()[:16]
        found = _DECLARED.search(image)
        if found is None:
            return IdCheck(False, reference, "unreadable")
        try:
            birth = date.fromisoformat(found.group(1).decode())
        except ValueError:
            return IdCheck(False, reference, "unreadable")
        if age_on(birth, today) < ADULT_AGE:
            return IdCheck(False, reference, "not_an_adult")
        return IdCheck(True, reference)


def id_checker(settings: Settings) -> IdChecker:
    """The configured checker; the fake is refused in production (see `payment_provider`)."""
    if settings.id_checker == "fake" and settings.environment == "production":
        raise ConfigurationError(
            "No ID checker is configured for ID checks.", code="id_checker_missing"
        )
    return FakeIdChecker()
