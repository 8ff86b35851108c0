"""The sign-in throttle in Redis, shared by every process: Lua scripts, one round trip each."""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import replace
from typing import cast

import anyio.to_thread
import redis
import redis.asyncio
from redis.commands.core import AsyncScript

from tutela.identity.throttle import (
    _MAX_DOUBLINGS,
    _STUFFERS_KEPT,
    PENDING_SECONDS,
    STUFFING_SOURCES,
    WINDOW_BUCKETS,
    Attempt,
    ThrottlePolicy,
    Verdict,
    _judge,
    _pending,
    _source_free,
    _source_keys,
    _source_wait,
)

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

# Reservations in flight (`begin`): a sorted set per source, network and account, one member
# per attempt scored by when it began. Live while younger than PENDING.
_IN_FLIGHT = """
local function in_flight(key, now)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest == 0 or now - tonumber(newest[2]) >= PENDING then return 0, '' end
  return redis.call('ZCOUNT', key, '(' .. (now - PENDING), '+inf'), newest[2]
end
local function consume(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - PENDING)
  redis.call('ZPOPMIN', key)
end
"""

# KEYS: 1 source, 2 network, 3 account, 4 accounts the source failed on, 5 defended,
#       6-8 the reservations of source, network and account
# ARGV: 1 the window's exclusive low end ("(t"), 2 now, 3 a reservation id,
#       4 known device (0/1), 5 reserve (0/1: `check` only reads)
# The source rule is decided here, so checking and reserving are one atomic step; the
# rest of the verdict is worked out in Python from the same figures.
# One string in reply, not an array: parsing many replies costs redis-py more than split.
_BEGIN = """
local now = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'n', 't')
local p = redis.call('HMGET', KEYS[2], 'n', 't')
local a = redis.call('HMGET', KEYS[3], 'n', 't')
local k = redis.call('ZCOUNT', KEYS[4], ARGV[1], '+inf')
local d = redis.call('GET', KEYS[5])
local sp, st = in_flight(KEYS[6], now)
local pp, pt = in_flight(KEYS[7], now)
local ap, at = in_flight(KEYS[8], now)

local function tally(v, pending, newest)
  local n, last = 0, 0
  if v[1] and v[2] and now - tonumber(v[2]) < MEMORY then
    n, last = tonumber(v[1]), tonumber(v[2])
  end
  if pending > 0 then
    n = n + pending
    if tonumber(newest) > last then last = tonumber(newest) end
  end
  return n, last
end
local function wait(n, last, free)
  if n < free then return 0 end
  local doublings = n - free
  if doublings > MAX_DOUBLINGS then doublings = MAX_DOUBLINGS end
  local delay = BASE_DELAY * 2 ^ doublings
  if delay > MAX_DELAY then delay = MAX_DELAY end
  return last + delay - now
end

local allowed = 1
if ARGV[4] ~= '1' then
  local source_free, network_free = SOURCE_FREE, NETWORK_FREE
  if d and tonumber(d) > now then source_free, network_free = 1, DEFENDED_NETWORK_FREE end
  local sn, sl = tally(s, sp, st)
  local pn, pl = tally(p, pp, pt)
  if wait(sn, sl, source_free) > 0 or wait(pn, pl, network_free) > 0 then allowed = 0 end
end
if allowed == 1 and ARGV[5] == '1' then
  for i = 6, 8 do
    redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - PENDING)
    redis.call('EXPIRE', KEYS[i], PENDING_TTL)
  end
end
return table.concat({s[1] or '', s[2] or '', p[1] or '', p[2] or '', a[1] or '', a[2] or '',
  k, d or '', sp, st, pp, pt, ap, at, allowed}, ' ')
"""

# KEYS: 1 source, 2 network, 3 defended, 4-5 the reservations of source and network
# ARGV: 1 now
_SOURCE = """
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'n', 't')
local p = redis.call('HMGET', KEYS[2], 'n', 't')
local d = redis.call('GET', KEYS[3])
local sp, st = in_flight(KEYS[4], now)
local pp, pt = in_flight(KEYS[5], now)
return table.concat({s[1] or '', s[2] or '', p[1] or '', p[2] or '', d or '', sp, st, pp, pt},
  ' ')
"""

# KEYS: the reservations of source, network and account; ARGV: now
_RELEASE = """
local now = tonumber(ARGV[1])
for i = 1, 3 do consume(KEYS[i], now) end
return 0
"""

# KEYS: source, network, account, accounts the source failed on, stuffing sources, defended,
#       the detector's window (a hash: "<bucket>:a|f|b" -> attempts, failures, breached),
#       8-10 the reservations of source, network and account (one of each is consumed)
# ARGV: 1 now, 2 failed (0/1), 3 breached (0/1), 4 account key, 5 source key,
#       6 the current bucket, 7 the window's low end, 8 defended until
# The policy's numbers are constants in the script (see `_constants`): fewer arguments
# to encode on every call.
_RECORD = """
local now = tonumber(ARGV[1])
local failed = ARGV[2] == '1'
local low, low_open = ARGV[7], '(' .. ARGV[7]
for i = 8, 10 do consume(KEYS[i], now) end

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


def _constants(policy: ThrottlePolicy) -> str:
    """The policy's numbers as Lua constants."""
    # TTLs only collect garbage: the rules compare stored times with `now`.
    constants = {
        "PENDING": repr(float(PENDING_SECONDS)),
        "PENDING_TTL": str(math.ceil(PENDING_SECONDS) + 60),
        "SOURCE_FREE": str(policy.source_free_failures),
        "NETWORK_FREE": str(policy.prefix_free_failures),
        "DEFENDED_NETWORK_FREE": str(_source_free(policy, True)[1]),
        "BASE_DELAY": repr(float(policy.base_delay_seconds)),
        "MAX_DELAY": repr(float(policy.max_delay_seconds)),
        "MAX_DOUBLINGS": str(_MAX_DOUBLINGS),
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
    return "".join(f"local {name} = {value}\n" for name, value in constants.items())


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
        *,
        url: str | None = None,
    ) -> None:
        self._client = client
        # With the server's URL, the door's read goes through an asyncio client on the
        # event loop itself, not a thread: half the CPU of a refusal (`source_wait_async`).
        self._url = url
        self._async: tuple[asyncio.AbstractEventLoop, AsyncScript] | None = None
        self._policy = policy = policy or ThrottlePolicy()
        self._prefix = prefix
        self._defended_key = prefix + "defended"
        self._stuffers_key = prefix + "stuffers"
        self._window_key = prefix + "window"
        self._bucket_seconds = policy.stuffing_window_seconds / WINDOW_BUCKETS
        self._defended_ttl = _defended_ttl(policy)
        header = _constants(policy) + _IN_FLIGHT
        self._begin_script = client.register_script(header + _BEGIN)
        self._source_text = header + _SOURCE
        self._source_script = client.register_script(self._source_text)
        self._release_script = client.register_script(header + _RELEASE)
        self._record_script = client.register_script(header + _SWITCH_ON + _RECORD)
        self._enter_script = client.register_script(_ENTER)

    def check(self, attempt: Attempt, now: float) -> Verdict:
        return self._begin(attempt, now, reserve=False)

    def begin(self, attempt: Attempt, now: float) -> Verdict:
        return self._begin(attempt, now, reserve=True)

    def release(self, attempt: Attempt, now: float) -> None:
        self._release_script(keys=self._pending_keys(attempt), args=(repr(now),))

    def source_wait(self, source: str, now: float) -> float:
        reply = self._source_script(keys=self._source_keys(source), args=(repr(now),))
        return self._source_reply(reply, now)

    async def source_wait_async(self, source: str, now: float) -> float:
        """`source_wait` from the event loop: the same script, one round trip, no thread."""
        if self._url is None:
            return await anyio.to_thread.run_sync(self.source_wait, source, now)
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            # A client belongs to one event loop (a server process has one).
            client = redis.asyncio.Redis.from_url(
                self._url, socket_connect_timeout=2.0, socket_timeout=2.0
            )
            self._async = loop, client.register_script(self._source_text)
        script = self._async[1]
        reply = await script(keys=self._source_keys(source), args=(repr(now),))
        return self._source_reply(reply, now)

    def _source_keys(self, source: str) -> tuple[str, str, str, str, str]:
        source_key, network_key = _source_keys(source)
        p = self._prefix
        return (
            p + "src:" + source_key,
            p + "net:" + network_key,
            self._defended_key,
            p + "pend:src:" + source_key,
            p + "pend:net:" + network_key,
        )

    def _source_reply(self, reply: object, now: float) -> float:
        policy = self._policy
        text = reply.decode() if isinstance(reply, bytes) else cast("str", reply)
        s_n, s_t, p_n, p_t, defended_until, s_p, s_pt, p_p, p_pt = text.split(" ")
        memory = policy.failure_memory_seconds
        return _source_wait(
            policy,
            now,
            source=_pending(_tally(s_n, s_t, now, memory), int(s_p), float(s_pt or 0)),
            network=_pending(_tally(p_n, p_t, now, memory), int(p_p), float(p_pt or 0)),
            defended=bool(defended_until) and now < float(defended_until),
        )

    def _pending_keys(self, attempt: Attempt) -> tuple[str, str, str]:
        source, network = _source_keys(attempt.source)
        p = self._prefix + "pend:"
        return p + "src:" + source, p + "net:" + network, p + "acct:" + attempt.account

    def _begin(self, attempt: Attempt, now: float, *, reserve: bool) -> Verdict:
        policy = self._policy
        source, network = _source_keys(attempt.source)
        p = self._prefix
        reply = self._begin_script(
            keys=(
                p + "src:" + source,
                p + "net:" + network,
                p + "acct:" + attempt.account,
                p + "srcacct:" + source,
                self._defended_key,
                *self._pending_keys(attempt),
            ),
            args=(
                "(" + repr(now - policy.stuffing_window_seconds),
                repr(now),
                secrets.token_hex(8),
                "1" if attempt.known_device else "0",
                "1" if reserve else "0",
            ),
        )
        text = reply.decode() if isinstance(reply, bytes) else cast("str", reply)
        (s_n, s_t, p_n, p_t, a_n, a_t, stuffing, defended_until) = text.split(" ")[:8]
        s_p, s_pt, p_p, p_pt, a_p, a_pt, allowed = text.split(" ")[8:]
        memory = policy.failure_memory_seconds
        account = _pending(
            _tally(a_n, a_t, now, policy.account_memory_seconds), int(a_p), float(a_pt or 0)
        )
        verdict = _judge(
            policy,
            attempt,
            now,
            source=_pending(_tally(s_n, s_t, now, memory), int(s_p), float(s_pt or 0)),
            network=_pending(_tally(p_n, p_t, now, memory), int(p_p), float(p_pt or 0)),
            account_failures=account[0],
            stuffing_source=int(stuffing) >= policy.stuffing_accounts_per_source,
            defended=bool(defended_until) and now < float(defended_until),
        )
        # The script decided the source rule atomically; its word is final.
        if allowed != "1":
            return replace(verdict, allowed=False, retry_after=max(verdict.retry_after, 0.001))
        return replace(verdict, allowed=True, retry_after=0.0, reserved=reserve)

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
                *self._pending_keys(attempt),
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
