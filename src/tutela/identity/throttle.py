"""The sign-in throttle: failures per source, network and account, and a stuffing detector.

It serves S2 (NIST SP 800-63B §5.2.2: at most 100 consecutive failed attempts per account,
with waits, challenges and risk signals before that), S4 (OWASP Authentication Cheat Sheet:
failures from a source are counted apart from failures on an account) and R6 (rate limiting
against credential stuffing). An account is never delayed or locked, so an attacker cannot
lock its holder out: failures on it only raise the bar (a second factor or an emailed link)
and, at S2's limit, stop its password and its codes from being checked from any device.

Every failure counts toward the account, whatever was wrong (a password, a second-factor
code, a recovery code or an emailed link) and whichever device sent it, known or not.

`begin` checks an attempt and reserves a pending slot for it in one atomic step (one Lua
script in Redis, one lock in memory): attempts in flight count as failures until they are
recorded, released, or `PENDING_SECONDS` pass, so concurrent connections cannot get more
guesses than the rules allow.

S2 counts consecutive failures: an account's count is kept until a complete sign-in
clears it (`reset_account`) or 90 days pass without a failure (`account_memory_seconds`),
not just for the day (`failure_memory_seconds`) that a source's or network's are kept.

Every rule takes time as `now` (seconds since the epoch). In Redis, TTLs only collect
garbage; the rules compare the timestamps stored with `now`, so a fake clock works.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import redis

if TYPE_CHECKING:
    from tutela.settings import Settings

# The detector's window is kept as this many buckets: it slides in steps of a sixth.
WINDOW_BUCKETS = 6
# Sources with at least `stuffing_accounts_per_source` failed accounts in the window that
# together switch defended mode on.
STUFFING_SOURCES = 3
# The stuffing sources remembered at once: enough to count to STUFFING_SOURCES.
_STUFFERS_KEPT = 16
# Delays double with every failure; past this exponent they are at the maximum anyway.
_MAX_DOUBLINGS = 64

# How long a reservation made by `begin` counts before it is forgotten (a worker that died
# mid-attempt must not slow its source for ever).
PENDING_SECONDS = 30.0
# The default of `ThrottlePolicy.account_link_after`.
LINK_AFTER = 20

# Account keys end up in Redis keys, so they must look like opaque keys: no "@", no ".",
# no spaces. An email address passed by mistake is refused instead of stored.
_ACCOUNT_KEY = re.compile(r"[0-9A-Za-z:_\-]{1,128}")


@dataclass(frozen=True)
class ThrottlePolicy:
    """The numbers of the throttle; `from_settings` reads them from `Settings`."""

    source_free_failures: int = 5
    prefix_free_failures: int = 20
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0
    account_step_up_after: int = 5
    # From this many failures on, a code (TOTP or recovery) is checked only on a sign-in
    # that came through the emailed link (S2's challenge before the limit).
    account_link_after: int = LINK_AFTER
    account_max_failures: int = 100
    # How long a source's or a network's failures are kept after the last one.
    failure_memory_seconds: float = 86_400
    # How long an account's count is kept after its last failure: S2 counts consecutive
    # failures, so only a complete sign-in clears it, or this much silence (90 days).
    account_memory_seconds: float = 7_776_000
    stuffing_window_seconds: float = 60
    stuffing_min_failures: int = 20
    stuffing_failure_ratio: float = 0.6
    stuffing_accounts_per_source: int = 4
    stuffing_breached_hits: int = 10
    defended_seconds: float = 1800

    def __post_init__(self) -> None:
        if min(self.source_free_failures, self.prefix_free_failures) < 1:
            raise ValueError("free failures must be at least 1")
        if not 1 <= self.account_step_up_after <= self.account_max_failures <= 100:
            raise ValueError("need 1 <= account_step_up_after <= account_max_failures <= 100 (S2)")
        if not 1 <= self.account_link_after <= self.account_max_failures:
            raise ValueError("need 1 <= account_link_after <= account_max_failures (S2)")
        if min(self.failure_memory_seconds, self.stuffing_window_seconds) <= 0:
            raise ValueError("failure memory and stuffing window must be positive")
        if self.account_memory_seconds <= 0:
            raise ValueError("account_memory_seconds must be positive")
        if self.defended_seconds <= 0 or self.stuffing_accounts_per_source < 1:
            raise ValueError("defended_seconds and stuffing_accounts_per_source must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        most = settings.signin_account_max_failures
        return cls(
            account_link_after=min(LINK_AFTER, most),
            source_free_failures=settings.signin_source_free_failures,
            prefix_free_failures=settings.signin_prefix_free_failures,
            max_delay_seconds=float(settings.signin_max_delay_seconds),
            account_step_up_after=settings.signin_account_step_up_after,
            account_max_failures=settings.signin_account_max_failures,
            failure_memory_seconds=float(settings.signin_failure_memory_seconds),
            account_memory_seconds=settings.signin_account_memory_days * 86_400.0,
            stuffing_window_seconds=float(settings.stuffing_window_seconds),
            stuffing_min_failures=settings.stuffing_min_failures,
            stuffing_failure_ratio=settings.stuffing_failure_ratio,
            stuffing_accounts_per_source=settings.stuffing_accounts_per_source,
            stuffing_breached_hits=settings.stuffing_breached_hits,
            defended_seconds=settings.defended_mode_minutes * 60.0,
        )


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: which account, from where, and whether from a known device.

    `account` is an opaque key (a keyed hash of the email), the same whether or not the
    account exists; it is refused if it looks like an email address, since it ends up in
    Redis keys. `source` is the client's IP address as text.
    """

    account: str
    source: str
    known_device: bool = False

    def __post_init__(self) -> None:
        if _ACCOUNT_KEY.fullmatch(self.account) is None:
            raise ValueError("the account key must be an opaque key, not an email address")

    @property
    def prefix(self) -> str:
        """The source's /24 (IPv4) or /64 (IPv6); text that is no address is its own prefix."""
        parsed = _network(self.source)
        return self.source if parsed is None else parsed[1]


@dataclass(frozen=True)
class Verdict:
    """What the throttle says about an attempt (S2, S4).

    `password_locked`: S2's limit is reached; no password or code is checked from any
    device, only a sign-in through the emailed link (or a WebAuthn assertion) goes on.
    `codes_locked`: `account_link_after` failures; a code is checked only on a sign-in that
    came through the emailed link. `reserved`: `begin` holds a pending slot for it.
    """

    allowed: bool
    retry_after: float
    account_failures: int
    step_up: bool
    password_locked: bool
    risky: bool
    defended: bool
    codes_locked: bool = False
    reserved: bool = False


class Throttle(Protocol):
    def check(self, attempt: Attempt, now: float) -> Verdict:
        """Read-only: what `begin` would answer, without reserving anything."""
        ...

    def begin(self, attempt: Attempt, now: float) -> Verdict:
        """Check and, if allowed, reserve a pending slot in one atomic step, before any hash.

        The slot counts as a failure of the source, its network and the account until
        `record_failure` or `record_success` consumes it, `release` drops it, or
        `PENDING_SECONDS` pass.
        """
        ...

    def release(self, attempt: Attempt, now: float) -> None:
        """Drop a reservation without counting anything (the attempt ended without a verdict)."""
        ...

    def source_wait(self, source: str, now: float) -> float:
        """Seconds an unknown device at `source` must wait: one read, for the door."""
        ...

    async def source_wait_async(self, source: str, now: float) -> float:
        """`source_wait` for the event loop, without a thread where the store allows."""
        ...

    def record_failure(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        """Count a failure (a wrong password, code or link) and consume a reservation;
        True only for the one call that switched defended mode on."""
        ...

    def record_success(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        """Count a right password in the detector and consume a reservation; True if it
        switched defended mode on."""
        ...

    def reset_account(self, attempt: Attempt) -> None:
        """After a complete sign-in (password and any factor): no consecutive failures.

        The only way an account's count ends before `account_memory_seconds` of silence (S2).
        """
        ...

    def defended(self, now: float) -> bool: ...

    def enter_defended(self, now: float) -> bool:
        """The operator's switch; True if defended mode was off."""
        ...

    def leave_defended(self) -> None: ...


def make_throttle(settings: Settings) -> Throttle:
    """Redis when `redis_url` is set (state shared by every worker), else this process's memory."""
    policy = ThrottlePolicy.from_settings(settings)
    if settings.redis_url:
        # Timeouts so a stalled Redis fails a sign-in instead of hanging it; the URL may
        # override them (its options win over these keywords).
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
        )
        return RedisThrottle(client, policy, url=settings.redis_url)
    return MemoryThrottle(policy)


# --- the rules, shared by both stores ---------------------------------------------------


@lru_cache(maxsize=16_384)
def _network(source: str) -> tuple[str, str] | None:
    """(canonical address, its /24 or /64) of a source, or None for text that is no address."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return str(address), f"{ipaddress.IPv4Address(int(address) & 0xFFFF_FF00)}/24"
    return str(address), f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"


@lru_cache(maxsize=16_384)
def _source_keys(source: str) -> tuple[str, str]:
    """The names a source and its network are counted under: addresses, or else a digest."""
    parsed = _network(source)
    if parsed is None:
        # Not an address, so its own prefix; whatever it holds stays out of the keys.
        digest = "x" + hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()[:32]
        return digest, digest
    return parsed


def wait_text(seconds: float) -> str:
    """'Try again in N seconds', in minutes (or hours) once the wait is long."""
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"Try again in {whole} second{'s' if whole != 1 else ''}."
    minutes = math.ceil(whole / 60)
    if minutes < 120:
        return f"Try again in {minutes} minutes."
    return f"Try again in {math.ceil(minutes / 60)} hours."


def _pending(tally: tuple[int, float], pending: int, newest: float) -> tuple[int, float]:
    """A failure tally with the attempts in flight counted as failures made at `newest`."""
    if pending <= 0:
        return tally
    return tally[0] + pending, max(tally[1], newest)


def _source_free(policy: ThrottlePolicy, defended: bool) -> tuple[int, int]:
    """Free failures of a source and of its network; fewer in defended mode."""
    if defended:
        return 1, max(1, policy.prefix_free_failures // 4)
    return policy.source_free_failures, policy.prefix_free_failures


def _source_wait(
    policy: ThrottlePolicy,
    now: float,
    *,
    source: tuple[int, float],
    network: tuple[int, float],
    defended: bool,
) -> float:
    source_free, network_free = _source_free(policy, defended)
    return max(
        _wait(policy, source[0], source[1], source_free, now),
        _wait(policy, network[0], network[1], network_free, now),
    )


def _wait(policy: ThrottlePolicy, failures: int, last: float, free: int, now: float) -> float:
    """Seconds left of the delay after `failures` (the first `free` cost nothing)."""
    if failures < free:
        return 0.0
    doublings = min(failures - free, _MAX_DOUBLINGS)
    delay = min(policy.base_delay_seconds * 2.0**doublings, policy.max_delay_seconds)
    return max(0.0, last + delay - now)


def _judge(
    policy: ThrottlePolicy,
    attempt: Attempt,
    now: float,
    *,
    source: tuple[int, float],
    network: tuple[int, float],
    account_failures: int,
    stuffing_source: bool,
    defended: bool,
) -> Verdict:
    """The verdict on an attempt from the live failure counts (count, time of the last)."""
    retry_after = 0.0
    if not attempt.known_device:
        # OWASP "Slow Down Online Guessing Attacks with Device Cookies": a device the
        # account signed in with before is not slowed by failures of others on its
        # network, so an attacker sharing the victim's network cannot lock the victim out.
        retry_after = _source_wait(policy, now, source=source, network=network, defended=defended)
    risky = source[0] > 0 or network[0] > 0 or stuffing_source
    return Verdict(
        allowed=retry_after <= 0.0,
        retry_after=retry_after,
        account_failures=account_failures,
        step_up=account_failures >= policy.account_step_up_after
        or (defended and risky and not attempt.known_device),
        # S2 counts every failure from every device: a known device skips source delays,
        # never the account's limit (its holder goes on through the emailed link).
        password_locked=account_failures >= policy.account_max_failures,
        risky=risky,
        defended=defended,
        codes_locked=account_failures >= policy.account_link_after,
    )


def _under_attack(
    policy: ThrottlePolicy, *, attempts: int, failures: int, breached: int, stuffers: int
) -> bool:
    """The stuffing detector over one window (the Lua script below says the same)."""
    return (
        (
            failures >= policy.stuffing_min_failures
            and failures >= policy.stuffing_failure_ratio * attempts
        )
        or stuffers >= STUFFING_SOURCES
        or breached >= policy.stuffing_breached_hits
    )


# --- in this process's memory -------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    count: int
    last: float


class MemoryThrottle:
    """The throttle for one process: dictionaries under a lock, swept now and then.

    Sources and networks are swept a day (`failure_memory_seconds`) after their last
    failure, accounts only after `account_memory_seconds` (S2: consecutive failures).
    """

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self._policy = policy or ThrottlePolicy()
        self._bucket_seconds = self._policy.stuffing_window_seconds / WINDOW_BUCKETS
        self._lock = threading.Lock()
        self._sources: dict[str, _Tally] = {}
        self._networks: dict[str, _Tally] = {}
        self._accounts: dict[str, _Tally] = {}
        # Per source: the accounts it failed on and when, at most stuffing_accounts_per_source.
        self._failed_accounts: dict[str, dict[str, float]] = {}
        self._window: dict[int, list[int]] = {}  # bucket -> [attempts, failures, breached]
        self._stuffers: dict[str, float] = {}
        # "s:"/"n:"/"a:" + key -> when each reservation in flight was made (see `begin`).
        self._pending: dict[str, list[float]] = {}
        self._defended_until = -math.inf
        self._next_sweep = -math.inf
        self._sweep_at = 10_000

    def check(self, attempt: Attempt, now: float) -> Verdict:
        with self._lock:
            return self._verdict(attempt, now)

    def begin(self, attempt: Attempt, now: float) -> Verdict:
        with self._lock:
            verdict = self._verdict(attempt, now)
            if not verdict.allowed:
                return verdict
            for key in self._pending_keys(attempt):
                self._pending.setdefault(key, []).append(now)
            return replace(verdict, reserved=True)

    def release(self, attempt: Attempt, now: float) -> None:
        with self._lock:
            self._consume(attempt, now)

    def source_wait(self, source: str, now: float) -> float:
        policy = self._policy
        source_key, network_key = _source_keys(source)
        memory = policy.failure_memory_seconds
        with self._lock:
            return _source_wait(
                policy,
                now,
                source=_pending(
                    self._live(self._sources.get(source_key), now, memory),
                    *self._in_flight("s:" + source_key, now),
                ),
                network=_pending(
                    self._live(self._networks.get(network_key), now, memory),
                    *self._in_flight("n:" + network_key, now),
                ),
                defended=now < self._defended_until,
            )

    async def source_wait_async(self, source: str, now: float) -> float:
        # Memory only, under a lock held for microseconds: no thread needed.
        return self.source_wait(source, now)

    @staticmethod
    def _pending_keys(attempt: Attempt) -> tuple[str, str, str]:
        source, network = _source_keys(attempt.source)
        return "s:" + source, "n:" + network, "a:" + attempt.account

    def _in_flight(self, key: str, now: float) -> tuple[int, float]:
        """(reservations still counting, when the newest was made); prunes expired ones."""
        times = self._pending.get(key)
        if not times:
            return 0, 0.0
        live = [t for t in times if now - t < PENDING_SECONDS]
        if len(live) != len(times):
            if live:
                self._pending[key] = live
            else:
                del self._pending[key]
        return len(live), max(live, default=0.0)

    def _consume(self, attempt: Attempt, now: float) -> None:
        """Drop one reservation of the attempt's source, network and account, if any."""
        for key in self._pending_keys(attempt):
            if self._in_flight(key, now)[0]:
                times = self._pending[key]
                times.remove(min(times))
                if not times:
                    del self._pending[key]

    def _verdict(self, attempt: Attempt, now: float) -> Verdict:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        low = now - policy.stuffing_window_seconds
        memory = policy.failure_memory_seconds
        failed_on = self._failed_accounts.get(source)
        stuffing = (
            failed_on is not None
            and sum(1 for t in failed_on.values() if t > low) >= policy.stuffing_accounts_per_source
        )
        account = _pending(
            self._live(self._accounts.get(attempt.account), now, policy.account_memory_seconds),
            *self._in_flight("a:" + attempt.account, now),
        )
        return _judge(
            policy,
            attempt,
            now,
            source=_pending(
                self._live(self._sources.get(source), now, memory),
                *self._in_flight("s:" + source, now),
            ),
            network=_pending(
                self._live(self._networks.get(network), now, memory),
                *self._in_flight("n:" + network, now),
            ),
            account_failures=account[0],
            stuffing_source=stuffing,
            defended=now < self._defended_until,
        )

    def record_failure(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        return self._record(attempt, now, failed=True, breached=breached)

    def record_success(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        return self._record(attempt, now, failed=False, breached=breached)

    def reset_account(self, attempt: Attempt) -> None:
        with self._lock:
            self._accounts.pop(attempt.account, None)

    def defended(self, now: float) -> bool:
        with self._lock:
            return now < self._defended_until

    def enter_defended(self, now: float) -> bool:
        with self._lock:
            return self._switch_on(now)

    def leave_defended(self) -> None:
        with self._lock:
            self._defended_until = -math.inf

    @staticmethod
    def _live(tally: _Tally | None, now: float, memory: float) -> tuple[int, float]:
        """(count, time of the last failure), or nothing once `memory` seconds have passed."""
        if tally is None or now - tally.last >= memory:
            return 0, 0.0
        return tally.count, tally.last

    @staticmethod
    def _bump(
        table: dict[str, _Tally], key: str, now: float, cap: int | None, memory: float
    ) -> None:
        tally = table.get(key)
        if tally is None or now - tally.last >= memory:
            table[key] = _Tally(1, now)
            return
        tally.count = tally.count + 1 if cap is None else min(tally.count + 1, cap)
        tally.last = max(tally.last, now)

    def _record(self, attempt: Attempt, now: float, *, failed: bool, breached: bool) -> bool:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        low = now - policy.stuffing_window_seconds
        bucket = int(now // self._bucket_seconds)
        with self._lock:
            self._consume(attempt, now)
            self._maybe_sweep(now)
            if failed:
                memory = policy.failure_memory_seconds
                self._bump(self._sources, source, now, None, memory)
                self._bump(self._networks, network, now, None, memory)
                self._bump(
                    self._accounts,
                    attempt.account,
                    now,
                    policy.account_max_failures,
                    policy.account_memory_seconds,
                )
                failed_on = self._failed_accounts.setdefault(source, {})
                failed_on[attempt.account] = now
                if len(failed_on) > policy.stuffing_accounts_per_source:
                    del failed_on[min(failed_on, key=failed_on.__getitem__)]
                distinct = sum(1 for t in failed_on.values() if t > low)
                if distinct >= policy.stuffing_accounts_per_source:
                    self._stuffers[source] = now
                    if len(self._stuffers) > 2 * _STUFFERS_KEPT:
                        recent = sorted(self._stuffers.items(), key=lambda kv: kv[1])
                        self._stuffers = dict(recent[-_STUFFERS_KEPT:])
            counts = self._window.setdefault(bucket, [0, 0, 0])
            counts[0] += 1
            counts[1] += failed
            counts[2] += breached
            attempts = failures = hits = 0
            for b in range(bucket - WINDOW_BUCKETS + 1, bucket + 1):
                window = self._window.get(b)
                if window is not None:
                    attempts += window[0]
                    failures += window[1]
                    hits += window[2]
            stuffers = sum(1 for t in self._stuffers.values() if t > low)
            if _under_attack(
                policy, attempts=attempts, failures=failures, breached=hits, stuffers=stuffers
            ):
                return self._switch_on(now)
            return False

    def _switch_on(self, now: float) -> bool:
        until = now + self._policy.defended_seconds
        if now < self._defended_until:
            # Still under attack: stay defended for the full period from now.
            self._defended_until = max(self._defended_until, until)
            return False
        self._defended_until = until
        return True

    def _maybe_sweep(self, now: float) -> None:
        """Forget what the rules no longer look at, now and then or when memory grows."""
        policy = self._policy
        size = len(self._sources) + len(self._networks) + len(self._accounts)
        size += len(self._failed_accounts)
        if now < self._next_sweep and size < self._sweep_at:
            return
        for table, memory in (
            (self._sources, policy.failure_memory_seconds),
            (self._networks, policy.failure_memory_seconds),
            (self._accounts, policy.account_memory_seconds),
        ):
            forgotten = now - memory
            for key in [k for k, tally in table.items() if tally.last <= forgotten]:
                del table[key]
        low = now - policy.stuffing_window_seconds
        for key in [k for k, seen in self._failed_accounts.items() if max(seen.values()) <= low]:
            del self._failed_accounts[key]
        self._stuffers = {s: t for s, t in self._stuffers.items() if t > low}
        for key in list(self._pending):
            self._in_flight(key, now)
        oldest = int(now // self._bucket_seconds) - WINDOW_BUCKETS
        self._window = {b: c for b, c in self._window.items() if b > oldest}
        # At least every ten minutes, whichever memory is shorter.
        self._next_sweep = now + min(
            policy.failure_memory_seconds, policy.account_memory_seconds, 600.0
        )
        size = len(self._sources) + len(self._networks) + len(self._accounts)
        self._sweep_at = max(10_000, 2 * (size + len(self._failed_accounts)))


# Imported last: the Redis store is built from the rules above.
from tutela.identity.throttle_redis import RedisThrottle  # noqa: E402

__all__ = [
    "PENDING_SECONDS",
    "Attempt",
    "MemoryThrottle",
    "RedisThrottle",
    "Throttle",
    "ThrottlePolicy",
    "Verdict",
    "make_throttle",
    "wait_text",
]
