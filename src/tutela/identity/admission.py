"""Admission to argon2id work: a global hash budget for unknown devices, and slots (R6).

Credential stuffing is paid for in password hashes. Once the throttle is in defended mode,
attempts from devices Tutela has not seen share a global budget of hashes per second (a
token bucket; in Redis, one for every API process), and an attempt beyond it is refused
with a cheap 429 (`sign_in_busy`) before any hash is computed or any account is looked up.
Known devices never spend from it: an attack on unknown devices cannot price the people
who signed in before out of their own accounts (OWASP, "device cookies").

Each process also bounds how many hashes run at once (`Argon2Slots`): a few of its slots
are reserved for known devices and for second steps already in progress (step-up, a
password change), so a flood of unknown devices that takes every ordinary slot still
leaves them room. Verifying a second factor (TOTP, WebAuthn, a recovery code's keyed
hash) computes no argon2id and never waits for a slot.

Time is passed in as `now` (seconds since the epoch), so a fake clock refills the bucket.
In Redis the TTL only collects garbage; the script compares the stored time with `now`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, cast

import redis

from tutela.core.errors import SignInBusy

if TYPE_CHECKING:
    from tutela.settings import Settings

BUSY = "Sign-in is busy for a moment. Try again in a few seconds."


class Caller(StrEnum):
    """Who asks for a hash, which decides the budget and the slots it may use."""

    NEW_DEVICE = "new_device"  # a sign-in or sign-up from a device Tutela has not seen
    KNOWN_DEVICE = "known_device"  # a sign-in with the cookie of an earlier complete one
    SECOND_STEP = "second_step"  # step-up or a password change, inside a session

    @property
    def reserved_ok(self) -> bool:
        return self is not Caller.NEW_DEVICE


@dataclass(frozen=True)
class AdmissionPolicy:
    """The numbers of admission; `from_settings` reads them from `Settings`."""

    hashes_per_second: float = 10.0
    burst: int = 10
    slots: int = 4
    reserved_slots: int = 1
    slot_wait_seconds: float = 0.5
    # Known devices and second steps are not turned away after the short wait of unknown
    # devices: they wait about as long as a person would for an answer.
    favoured_wait_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.hashes_per_second <= 0 or self.burst < 1:
            raise ValueError("the hash budget needs a positive rate and a burst of at least 1")
        if not 0 <= self.reserved_slots < self.slots:
            raise ValueError("need 0 <= reserved_slots < slots: new devices need one slot")
        if min(self.slot_wait_seconds, self.favoured_wait_seconds) < 0:
            raise ValueError("slot waits must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionPolicy:
        return cls(
            hashes_per_second=settings.defended_hashes_per_second,
            burst=settings.defended_hash_burst,
            slots=settings.hash_slots,
            reserved_slots=settings.reserved_hash_slots,
            slot_wait_seconds=settings.argon2_slot_wait_seconds,
        )


class Admission(Protocol):
    def take(self, now: float) -> float:
        """Spend one hash of the global budget for unknown devices.

        0.0 when it was spent; otherwise nothing is spent and the answer is the seconds
        until the next hash is available (for Retry-After).
        """
        ...

    def wait(self, now: float) -> float:
        """Seconds until a hash is available, spending nothing (0.0 if one is there): the
        sign-in door's read, before routing."""
        ...

    def slot(self, caller: Caller) -> AbstractContextManager[None]:
        """Hold one of this process's argon2 slots while hashing; `SignInBusy` if the
        slots `caller` may use stay taken for its wait (`slot_wait_seconds` for a new
        device, `favoured_wait_seconds` for the others)."""
        ...


def make_admission(settings: Settings) -> Admission:
    """Redis when `redis_url` is set (one budget for every process), else this process's."""
    policy = AdmissionPolicy.from_settings(settings)
    if settings.redis_url:
        # Short timeouts, as the throttle's: a stalled Redis refuses instead of hanging.
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=2.0
        )
        return RedisAdmission(client, policy)
    return MemoryAdmission(policy)


def busy(retry_after: float) -> SignInBusy:
    """The refusal: 429 `sign_in_busy` with Retry-After, the same for every account."""
    return SignInBusy(BUSY, retry_after=max(1.0, round(retry_after, 1)))


class Argon2Slots:
    """This process's argon2 slots: `slots` at once, the last `reserved_slots` of them
    only for known devices and second steps, which also wait longer for one."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self._policy = policy
        self._ordinary = policy.slots - policy.reserved_slots
        self._busy = 0
        self._ready = threading.Condition()

    @contextmanager
    def hold(self, caller: Caller) -> Iterator[None]:
        policy = self._policy
        if caller.reserved_ok:
            limit, wait = policy.slots, max(policy.slot_wait_seconds, policy.favoured_wait_seconds)
        else:
            limit, wait = self._ordinary, policy.slot_wait_seconds
        with self._ready:
            if not self._ready.wait_for(lambda: self._busy < limit, timeout=wait):
                raise busy(1.0)
            self._busy += 1
        try:
            yield
        finally:
            with self._ready:
                self._busy -= 1
                # Waiters have different limits: wake them all, each checks its own.
                self._ready.notify_all()


def _refill(policy: AdmissionPolicy, tokens: float, last: float, now: float) -> float:
    """The bucket's tokens at `now` (the Lua script below says the same)."""
    if now <= last:
        return tokens  # a clock behind another process's refills nothing
    return min(float(policy.burst), tokens + (now - last) * policy.hashes_per_second)


class MemoryAdmission:
    """Admission for one process (the embedded mode, tests): the bucket under a lock."""

    def __init__(self, policy: AdmissionPolicy | None = None) -> None:
        self._policy = policy = policy or AdmissionPolicy()
        self._slots = Argon2Slots(policy)
        self._lock = threading.Lock()
        self._tokens = float(policy.burst)
        self._last = -math.inf

    def take(self, now: float) -> float:
        policy = self._policy
        with self._lock:
            tokens = _refill(policy, self._tokens, self._last, now)
            self._last = max(self._last, now)
            if tokens >= 1.0:
                self._tokens = tokens - 1.0
                return 0.0
            self._tokens = tokens
            return (1.0 - tokens) / policy.hashes_per_second

    def wait(self, now: float) -> float:
        policy = self._policy
        with self._lock:
            tokens = _refill(policy, self._tokens, self._last, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / policy.hashes_per_second

    def slot(self, caller: Caller) -> AbstractContextManager[None]:
        return self._slots.hold(caller)


# KEYS: the bucket (a hash: tokens, t); ARGV: now, rate, burst, TTL
# The reply is text: Lua numbers returned to Redis lose their fraction.
_TAKE = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 't')
local tokens, last = burst, now
if v[1] and v[2] then
  tokens, last = tonumber(v[1]), tonumber(v[2])
  if now > last then
    tokens = math.min(burst, tokens + (now - last) * rate)
    last = now
  end
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  't', string.format('%.17g', last))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return string.format('%.17g', wait)
"""


class RedisAdmission:
    """Admission with the budget in Redis, shared by every API process: one script call
    (one round trip) per unknown-device hash in defended mode. The slots stay per process:
    they bound this process's CPU and memory, which is what they protect.

    The key holds only the bucket's level and time, nothing about anyone signing in.
    """

    def __init__(
        self,
        client: redis.Redis,
        policy: AdmissionPolicy | None = None,
        prefix: str = "tutela:admission:",
    ) -> None:
        self._policy = policy = policy or AdmissionPolicy()
        self._slots = Argon2Slots(policy)
        self._key = prefix + "bucket"
        # Long enough to refill from empty, and then some: after it the bucket is full anyway.
        self._ttl = str(math.ceil(policy.burst / policy.hashes_per_second) + 60)
        self._client = client
        self._take = client.register_script(_TAKE)

    def take(self, now: float) -> float:
        policy = self._policy
        reply = self._take(
            keys=(self._key,),
            args=(repr(now), repr(float(policy.hashes_per_second)), str(policy.burst), self._ttl),
        )
        text = reply.decode() if isinstance(reply, bytes) else cast("str", reply)
        return float(text)

    def wait(self, now: float) -> float:
        policy = self._policy
        tokens_text, last_text = self._client.hmget(self._key, ["tokens", "t"])
        if tokens_text is None or last_text is None:
            return 0.0  # no bucket yet: full
        tokens = _refill(policy, float(tokens_text), float(last_text), now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / policy.hashes_per_second

    def slot(self, caller: Caller) -> AbstractContextManager[None]:
        return self._slots.hold(caller)
