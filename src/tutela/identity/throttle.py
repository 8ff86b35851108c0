"""The sign-in throttle: failures per source, network and account, and a stuffing detector.

It serves S2 (NIST SP 800-63B §5.2.2: at most 100 consecutive failed attempts per account,
with waits, challenges and risk signals before that), S4 (OWASP Authentication Cheat Sheet:
failures from a source are counted apart from failures on an account) and R6 (rate limiting
against credential stuffing). An account is never delayed or locked, so an attacker cannot
lock its holder out: failures on it only raise the bar (a second factor or an emailed link)
and, at S2's limit, stop its password from being checked for unknown devices.

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
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol, cast

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
        if min(self.failure_memory_seconds, self.stuffing_window_seconds) <= 0:
            raise ValueError("failure memory and stuffing window must be positive")
        if self.account_memory_seconds <= 0:
            raise ValueError("account_memory_seconds must be positive")
        if self.defended_seconds <= 0 or self.stuffing_accounts_per_source < 1:
            raise ValueError("defended_seconds and stuffing_accounts_per_source must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(
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
    allowed: bool
    retry_after: float
    account_failures: int
    step_up: bool
    password_locked: bool
    risky: bool
    defended: bool


class Throttle(Protocol):
    def check(self, attempt: Attempt, now: float) -> Verdict:
        """Read-only, before any password hash is computed."""
        ...

    def record_failure(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        """Count a wrong password; True only for the one call that switched defended mode on."""
        ...

    def record_success(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        """Count a right password in the detector; True if it switched defended mode on."""
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
        return RedisThrottle(client, policy)
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
        source_free, network_free = policy.source_free_failures, policy.prefix_free_failures
        if defended:
            source_free, network_free = 1, max(1, network_free // 4)
        retry_after = max(
            _wait(policy, source[0], source[1], source_free, now),
            _wait(policy, network[0], network[1], network_free, now),
        )
    risky = source[0] > 0 or network[0] > 0 or stuffing_source
    return Verdict(
        allowed=retry_after <= 0.0,
        retry_after=retry_after,
        account_failures=account_failures,
        step_up=account_failures >= policy.account_step_up_after
        or (defended and risky and not attempt.known_device),
        password_locked=account_failures >= policy.account_max_failures
        and not attempt.known_device,
        risky=risky,
        defended=defended,
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
        self._defended_until = -math.inf
        self._next_sweep = -math.inf
        self._sweep_at = 10_000

    def check(self, attempt: Attempt, now: float) -> Verdict:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        low = now - policy.stuffing_window_seconds
        with self._lock:
            failed_on = self._failed_accounts.get(source)
            stuffing = (
                failed_on is not None
                and sum(1 for t in failed_on.values() if t > low)
                >= policy.stuffing_accounts_per_source
            )
            return _judge(
                policy,
                attempt,
                now,
                source=self._live(self._sources.get(source), now, policy.failure_memory_seconds),
                network=self._live(self._networks.get(network), now, policy.failure_memory_seconds),
                account_failures=self._live(
                    self._accounts.get(attempt.account), now, policy.account_memory_seconds
                )[0],
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
        oldest = int(now // self._bucket_seconds) - WINDOW_BUCKETS
        self._window = {b: c for b, c in self._window.items() if b > oldest}
        # At least every ten minutes, whichever memory is shorter.
        self._next_sweep = now + min(
            policy.failure_memory_seconds, policy.account_memory_seconds, 600.0
        )
        size = len(self._sources) + len(self._networks) + len(self._accounts)
        self._sweep_at = max(10_000, 2 * (size + len(self._failed_accounts)))


# --- in Redis, shared by every process ------------------------------------------------------

# GET the defended key; on if the time stored is after now. Switching on is atomic in the
# script, so exactly one caller, in any process, sees 1.
_SWITCH_ON = """
local function switch_on(key, now, until_text, ttl)
  local current = redis.call('GET', key)
  if current and tonumber(current) > now then
    if tonumber(until_text) > tonumber(current) then
      redis.call('SET', key, until_text, 'EX', ttl)
    end
    return 0
  end
  redis.call('SET', key, until_text, 'EX', ttl)
  return 1
end
"""

# KEYS: source, network, account, accounts the source failed on, defended
# ARGV: the window's exclusive low end ("(t")
# One string in reply, not an array: parsing eight replies costs redis-py more than split.
_CHECK = """
local s = redis.call('HMGET', KEYS[1], 'n', 't')
local p = redis.call('HMGET', KEYS[2], 'n', 't')
local a = redis.call('HMGET', KEYS[3], 'n', 't')
local k = redis.call('ZCOUNT', KEYS[4], ARGV[1], '+inf')
local d = redis.call('GET', KEYS[5])
return table.concat({s[1] or '', s[2] or '', p[1] or '', p[2] or '', a[1] or '', a[2] or '',
  k, d or ''}, ' ')
"""

# KEYS: source, network, account, accounts the source failed on, stuffing sources, defended,
#       the detector's window (a hash: "<bucket>:a|f|b" -> attempts, failures, breached)
# ARGV: 1 now, 2 failed (0/1), 3 breached (0/1), 4 account key, 5 source key,
#       6 the current bucket, 7 the window's low end, 8 defended until
# The policy's numbers are constants in the script (see `_record_script`): fewer arguments
# to encode on every call.
_RECORD = """
local now = tonumber(ARGV[1])
local failed = ARGV[2] == '1'
local low, low_open = ARGV[7], '(' .. ARGV[7]

local function bump(key, cap, memory, ttl)
  local v = redis.call('HMGET', key, 'n', 't')
  local n, t = 1, ARGV[1]
  if v[1] and v[2] then
    local last = tonumber(v[2])
    if now - last < memory then
      n = tonumber(v[1]) + 1
      if cap > 0 and n > cap then n = cap end
      if last > now then t = v[2] end
    end
  end
  redis.call('HSET', key, 'n', n, 't', t)
  redis.call('EXPIRE', key, ttl)
end

if failed then
  bump(KEYS[1], 0, MEMORY, MEMORY_TTL)
  bump(KEYS[2], 0, MEMORY, MEMORY_TTL)
  -- S2: the account's count is consecutive failures, kept until a complete sign-in.
  bump(KEYS[3], ACCOUNT_CAP, ACCOUNT_MEMORY, ACCOUNT_MEMORY_TTL)
  redis.call('ZADD', KEYS[4], ARGV[1], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', low)
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(PER_SOURCE + 1))
  redis.call('EXPIRE', KEYS[4], WINDOW_TTL)
  if redis.call('ZCOUNT', KEYS[4], low_open, '+inf') >= PER_SOURCE then
    redis.call('ZADD', KEYS[5], ARGV[1], ARGV[5])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', low)
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(STUFFERS_KEPT + 1))
    redis.call('EXPIRE', KEYS[5], WINDOW_TTL)
  end
end

local window, bucket = KEYS[7], tonumber(ARGV[6])
redis.call('HINCRBY', window, ARGV[6] .. ':a', 1)
if failed then redis.call('HINCRBY', window, ARGV[6] .. ':f', 1) end
if ARGV[3] == '1' then redis.call('HINCRBY', window, ARGV[6] .. ':b', 1) end
redis.call('EXPIRE', window, WINDOW_TTL)

local sums = {a = 0, f = 0, b = 0}
local fields = redis.call('HGETALL', window)
for i = 1, #fields, 2 do
  local b, kind = string.match(fields[i], '^(-?%d+):(%a)$')
  if b and tonumber(b) > bucket - BUCKETS then
    sums[kind] = sums[kind] + tonumber(fields[i + 1])
  else
    redis.call('HDEL', window, fields[i])
  end
end
local stuffers = redis.call('ZCOUNT', KEYS[5], low_open, '+inf')

if (sums.f >= MIN_FAILURES and sums.f >= FAILURE_RATIO * sums.a)
    or stuffers >= STUFFING_SOURCES or sums.b >= BREACHED_HITS then
  return switch_on(KEYS[6], now, ARGV[8], DEFENDED_TTL)
end
return 0
"""


def _record_script(policy: ThrottlePolicy) -> str:
    """The record script with the policy's numbers as Lua constants."""
    # TTLs only collect garbage: the rules compare stored times with `now`.
    constants = {
        "MEMORY": repr(float(policy.failure_memory_seconds)),
        "MEMORY_TTL": str(math.ceil(policy.failure_memory_seconds) + 60),
        "ACCOUNT_MEMORY": repr(float(policy.account_memory_seconds)),
        "ACCOUNT_MEMORY_TTL": str(math.ceil(policy.account_memory_seconds) + 60),
        "ACCOUNT_CAP": str(policy.account_max_failures),
        "WINDOW_TTL": str(math.ceil(2 * policy.stuffing_window_seconds) + 60),
        "BUCKETS": str(WINDOW_BUCKETS),
        "PER_SOURCE": str(policy.stuffing_accounts_per_source),
        "STUFFERS_KEPT": str(_STUFFERS_KEPT),
        "MIN_FAILURES": str(policy.stuffing_min_failures),
        "FAILURE_RATIO": repr(float(policy.stuffing_failure_ratio)),
        "BREACHED_HITS": str(policy.stuffing_breached_hits),
        "STUFFING_SOURCES": str(STUFFING_SOURCES),
        "DEFENDED_TTL": _defended_ttl(policy),
    }
    header = "".join(f"local {name} = {value}\n" for name, value in constants.items())
    return header + _SWITCH_ON + _RECORD


def _defended_ttl(policy: ThrottlePolicy) -> str:
    return str(math.ceil(2 * policy.defended_seconds) + 60)


# KEYS: defended; ARGV: now, until, TTL
_ENTER = _SWITCH_ON + "return switch_on(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3])\n"


def _tally(count: str, last: str, now: float, memory: float) -> tuple[int, float]:
    if not count or not last:
        return 0, 0.0
    when = float(last)
    if now - when >= memory:
        return 0, 0.0
    return int(count), when


class RedisThrottle:
    """The throttle shared by every process through Redis: one round trip per call.

    Keys hold only the opaque account key and IP addresses (S4's source counts), never an
    email address or a password. Text that is no IP address is kept as a digest. Source and
    network keys expire a day after their last failure, account keys after
    `account_memory_seconds` (S2), unless a complete sign-in deletes them first.
    """

    def __init__(
        self,
        client: redis.Redis,
        policy: ThrottlePolicy | None = None,
        prefix: str = "tutela:throttle:",
    ) -> None:
        self._client = client
        self._policy = policy = policy or ThrottlePolicy()
        self._prefix = prefix
        self._defended_key = prefix + "defended"
        self._stuffers_key = prefix + "stuffers"
        self._window_key = prefix + "window"
        self._bucket_seconds = policy.stuffing_window_seconds / WINDOW_BUCKETS
        self._defended_ttl = _defended_ttl(policy)
        self._check_script = client.register_script(_CHECK)
        self._record_script = client.register_script(_record_script(policy))
        self._enter_script = client.register_script(_ENTER)

    def check(self, attempt: Attempt, now: float) -> Verdict:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        p = self._prefix
        reply = self._check_script(
            keys=(
                p + "src:" + source,
                p + "net:" + network,
                p + "acct:" + attempt.account,
                p + "srcacct:" + source,
                self._defended_key,
            ),
            args=("(" + repr(now - policy.stuffing_window_seconds),),
        )
        text = reply.decode() if isinstance(reply, bytes) else cast("str", reply)
        s_n, s_t, p_n, p_t, a_n, a_t, stuffing, defended_until = text.split(" ")
        memory = policy.failure_memory_seconds
        return _judge(
            policy,
            attempt,
            now,
            source=_tally(s_n, s_t, now, memory),
            network=_tally(p_n, p_t, now, memory),
            account_failures=_tally(a_n, a_t, now, policy.account_memory_seconds)[0],
            stuffing_source=int(stuffing) >= policy.stuffing_accounts_per_source,
            defended=bool(defended_until) and now < float(defended_until),
        )

    def record_failure(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        return self._record(attempt, now, failed=True, breached=breached)

    def record_success(self, attempt: Attempt, now: float, *, breached: bool = False) -> bool:
        return self._record(attempt, now, failed=False, breached=breached)

    def reset_account(self, attempt: Attempt) -> None:
        self._client.delete(self._prefix + "acct:" + attempt.account)

    def defended(self, now: float) -> bool:
        until = self._client.get(self._defended_key)
        return until is not None and now < float(until)

    def enter_defended(self, now: float) -> bool:
        entered = self._enter_script(
            keys=(self._defended_key,),
            args=(repr(now), repr(now + self._policy.defended_seconds), self._defended_ttl),
        )
        return int(cast("int", entered)) == 1

    def leave_defended(self) -> None:
        self._client.delete(self._defended_key)

    def _record(self, attempt: Attempt, now: float, *, failed: bool, breached: bool) -> bool:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        p = self._prefix
        entered = self._record_script(
            keys=(
                p + "src:" + source,
                p + "net:" + network,
                p + "acct:" + attempt.account,
                p + "srcacct:" + source,
                self._stuffers_key,
                self._defended_key,
                self._window_key,
            ),
            args=(
                repr(now),
                "1" if failed else "0",
                "1" if breached else "0",
                attempt.account,
                source,
                str(int(now // self._bucket_seconds)),
                repr(now - policy.stuffing_window_seconds),
                repr(now + policy.defended_seconds),
            ),
        )
        return int(cast("int", entered)) == 1
