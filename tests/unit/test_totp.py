"""TOTP: RFC 6238 Appendix B test vectors, and the window our verification accepts."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from tutela.identity.factors import TOTP_INTERVAL, matching_totp_step

# RFC 6238 Appendix B: the seeds are these ASCII strings, one per hash function.
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, {"sha1": "94287082", "sha256": "46119246", "sha512": "90693936"}),
    (1111111109, {"sha1": "07081804", "sha256": "68084774", "sha512": "25091201"}),
    (1111111111, {"sha1": "14050471", "sha256": "67062674", "sha512": "99943326"}),
    (1234567890, {"sha1": "89005924", "sha256": "91819424", "sha512": "93441116"}),
    (2000000000, {"sha1": "69279037", "sha256": "90698825", "sha512": "38618901"}),
    (20000000000, {"sha1": "65353130", "sha256": "77737706", "sha512": "47863826"}),
]


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize(("unix_time", "expected"), VECTORS)
def test_rfc6238_appendix_b(algorithm: str, unix_time: int, expected: dict[str, str]) -> None:
    totp = pyotp.TOTP(
        base64.b32encode(SEEDS[algorithm]).decode(), digits=8, digest=algorithm, interval=30
    )
    assert totp.at(unix_time) == expected[algorithm]


SECRET = bytes(range(20))
NOW = datetime(2026, 3, 1, 9, 30, 15, tzinfo=UTC)


def _code_at(when: datetime) -> str:
    return pyotp.TOTP(base64.b32encode(SECRET).decode()).at(when)


def _step(when: datetime) -> int:
    return int(when.timestamp()) // TOTP_INTERVAL


@pytest.mark.parametrize("steps_away", [-1, 0, 1])
def test_current_and_adjacent_steps_are_accepted(steps_away: int) -> None:
    when = NOW + timedelta(seconds=TOTP_INTERVAL * steps_away)
    assert matching_totp_step(SECRET, _code_at(when), now=NOW) == _step(when)


@pytest.mark.parametrize("steps_away", [-2, 2])
def test_two_steps_away_is_refused(steps_away: int) -> None:
    when = NOW + timedelta(seconds=TOTP_INTERVAL * steps_away)
    assert matching_totp_step(SECRET, _code_at(when), now=NOW) is None


def test_spaces_between_digits_are_ignored() -> None:
    code = _code_at(NOW)
    assert matching_totp_step(SECRET, f"{code[:3]} {code[3:]}", now=NOW) == _step(NOW)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "-12345"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert matching_totp_step(SECRET, code, now=NOW) is None


def test_another_secret_does_not_match() -> None:
    assert matching_totp_step(bytes(20), _code_at(NOW), now=NOW) is None
