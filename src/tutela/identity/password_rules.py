"""Rules a new password must meet: NIST SP 800-63B §5.1.1.2 (S1), with a breach check (R7).

Length is what counts: at least 8 characters, 15 or more recommended, up to 256
accepted (NIST asks for at least 64), any Unicode character and spaces allowed. There
are no composition rules (no "one digit, one symbol"). A password is refused, with
the reason, when it is known from breaches or common-password lists, names the
service or the user's email, or is one repeated character or a plain run.
"""

from __future__ import annotations

import unicodedata
from itertools import pairwise
from typing import TYPE_CHECKING

from tutela.core.errors import WeakPassword

if TYPE_CHECKING:
    from tutela.identity.breached import BreachChecker

MIN_LENGTH = 8
RECOMMENDED_LENGTH = 15
MAX_LENGTH = 256
# NFKC never makes a string this much shorter in practice; beyond it, refuse unread.
_RAW_LIMIT = 4 * MAX_LENGTH
_MIN_LOCAL_PART = 4

GUIDANCE = (
    f"Use at least {MIN_LENGTH} characters; {RECOMMENDED_LENGTH} or more is better, and a "
    "passphrase of a few unrelated words is easy to remember. Spaces and any characters "
    "are welcome; common or breached passwords are refused."
)


def normalise(password: str) -> str:
    """Unicode NFKC, so one passphrase typed on two keyboards is one password (§5.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


def _is_repetitive(password: str) -> bool:
    """One character repeated, or a plain run up or down such as 12345678 or hgfedcba."""
    folded = password.casefold()
    if len(set(folded)) <= 1:
        return True
    steps = {ord(b) - ord(a) for a, b in pairwise(folded)}
    return steps in ({1}, {-1})


def _names_context(password: str, *, email: str | None, service_name: str) -> bool:
    """The service's name, the whole email or its local part (≥ 4 characters), any case."""
    folded = password.casefold()
    words = [service_name]
    if email:
        address = normalise(email.strip())
        local = address.rpartition("@")[0]
        words.append(address)
        if len(local) >= _MIN_LOCAL_PART:
            words.append(local)
    return any(word and word.casefold() in folded for word in words)


def check_new_password(
    password: str,
    *,
    email: str | None,
    breaches: BreachChecker,
    service_name: str = "tutela",
) -> str:
    """Return the normalised password to hash, or raise `WeakPassword` saying why (S1, R7).

    Codes: `password_too_short`, `password_too_long`, `password_repetitive`,
    `password_context`, `password_breached`. Length is counted in code points after
    NFKC. The breach store, the common list included, is asked last, and only the
    5-hex prefix of the password's SHA-1 reaches it (S5).
    """
    if len(password) > _RAW_LIMIT:
        raise WeakPassword(f"Use at most {MAX_LENGTH} characters.", code="password_too_long")
    normalised = normalise(password)
    if len(normalised) < MIN_LENGTH:
        raise WeakPassword(
            f"Use at least {MIN_LENGTH} characters; {RECOMMENDED_LENGTH} or more is recommended.",
            code="password_too_short",
        )
    if len(normalised) > MAX_LENGTH:
        raise WeakPassword(f"Use at most {MAX_LENGTH} characters.", code="password_too_long")
    if _is_repetitive(normalised):
        raise WeakPassword(
            "One repeated character or a plain run such as 12345678 is guessed at once.",
            code="password_repetitive",
        )
    if _names_context(normalised, email=email, service_name=service_name):
        raise WeakPassword(
            f"Do not use the name {service_name} or your email address in your password.",
            code="password_context",
        )
    if breaches.count(normalised) > 0:
        raise WeakPassword(
            "This password is in a list of breached or common passwords; choose another.",
            code="password_breached",
        )
    return normalised


def strength_hint(password: str) -> str:
    """A short nudge for forms: empty once the password reaches the recommended length."""
    length = len(normalise(password))
    if length >= RECOMMENDED_LENGTH:
        return ""
    if length < MIN_LENGTH:
        return f"At least {MIN_LENGTH} characters; {RECOMMENDED_LENGTH} or more is recommended."
    return f"{RECOMMENDED_LENGTH} or more characters is recommended; try a few more words."
