"""The sign-in door: a throttled source is refused before routing (R6, S4).

A plain ASGI middleware in front of the sign-in paths. For a POST to one of them it asks
the throttle, with one call (one Redis round trip), how long the source must wait; while
it must, the answer is the 429 the route itself would give, with `Retry-After`, and
FastAPI never routes, validates or opens a database session for it. Refusals then cost a
small fraction of a password hash, which an attacker otherwise makes us pay per attempt.
The read runs on the event loop (`Throttle.source_wait_async`), not in a worker thread:
the hop to a thread cost more CPU than the Redis round trip (`bench/door.py`). The door
sits inside the request log and the host check, so a refusal is still logged and still
carries the security headers.

A request carrying a known-device token (cookie or header) goes on to the route: a device
that signed in before is not slowed by failures from its network (OWASP, device cookies),
and only the route can tell whether the token is real. Camera and voice devices send
their tokens to ingestion paths, which are not guarded here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio.to_thread
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tutela.core.clock import Clock
from tutela.identity.throttle import Throttle

log = logging.getLogger("tutela.identity")

# Prefixes of the paths where a request is a guess at a secret: a password, a code, a link
# or a recovery. A prefix covers itself and what lies below it ("/login" covers
# "/login/factor", not "/loginx"). Passkey and recovery paths are listed before they exist.
GUARDED_PATHS: tuple[str, ...] = (
    "/api/v1/auth/token",  # password, then /factor and /link
    "/api/v1/staff/auth/token",
    "/api/v1/staff/auth/passkey",
    "/api/v1/signup",
    "/api/v1/auth/passkey",
    "/api/v1/auth/recovery",
    "/login",  # the console: password, /factor, /link, /passkey
    "/staff/login",  # the staff console: password, /factor
    "/forgot",
    "/recover",
)
GUARDED_METHODS = frozenset({"POST"})
# The paths where an unknown device's request costs a password hash (sign-in, sign-up):
# in defended mode, with the hash budget spent, the door answers `sign_in_busy` itself
# rather than after routing, a database session and the throttle's reservation (R6).
HASHING_PATHS = frozenset(
    {
        "/api/v1/auth/token",
        "/api/v1/staff/auth/token",
        "/api/v1/signup",
        "/login",
        "/staff/login",
    }
)
DEVICE_HEADER = b"x-tutela-device"

Refusal = Callable[[Scope, float], Response]
BusyWait = Callable[[float], float]
"""Seconds until the defended-mode hash budget has a hash for an unknown device; 0.0 when
defended mode is off or a hash is there. Reads only: the route still spends it."""


def guarded(path: str, paths: tuple[str, ...] = GUARDED_PATHS) -> bool:
    """Whether `path` is one of the sign-in paths (or below one)."""
    return any(path == p or path.startswith(p + "/") for p in paths)


class SignInDoor:
    """Refuses POSTs to the sign-in paths from a source the throttle is slowing down.

    `refuse(scope, wait)` builds the answer: the same body the route gives for the same
    refusal (problem+json for the API, the sign-in page for the console). With `busy_wait`
    and `refuse_busy`, a POST to one of `HASHING_PATHS` in defended mode while the hash
    budget is spent gets the route's `sign_in_busy` the same way (two reads more).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        throttle: Throttle,
        clock: Clock,
        refuse: Refusal,
        device_cookie: str,
        paths: tuple[str, ...] = GUARDED_PATHS,
        busy_wait: BusyWait | None = None,
        refuse_busy: Refusal | None = None,
    ) -> None:
        self.app = app
        self.busy_wait = busy_wait
        self.refuse_busy = refuse_busy
        self.throttle = throttle
        self.clock = clock
        self.refuse = refuse
        self.device_cookie = device_cookie.encode() + b"="
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in GUARDED_METHODS
            or not guarded(scope["path"], self.paths)
            or self._carries_device(scope)
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        source = client[0] if client else ""
        try:
            # On the event loop: Redis's asyncio client, or memory under a short lock.
            wait = await self.throttle.source_wait_async(source, self.clock.now().timestamp())
        except RedisError:
            # The route answers for a throttle store that is down (503, never unthrottled).
            await self.app(scope, receive, send)
            return
        if wait <= 0:
            wait = await self._busy(scope)
            if wait <= 0 or self.refuse_busy is None:
                await self.app(scope, receive, send)
                return
            response = self.refuse_busy(scope, wait)
        else:
            response = self.refuse(scope, wait)
        await response(scope, receive, send)

    async def _busy(self, scope: Scope) -> float:
        """The budget's wait for a hashing path; 0.0 elsewhere or when Redis is down (the
        route then answers for it, 503 in defended mode, never a hash unbudgeted)."""
        if self.busy_wait is None or scope["path"] not in HASHING_PATHS:
            return 0.0
        try:
            return await anyio.to_thread.run_sync(self.busy_wait, self.clock.now().timestamp())
        except RedisError:
            return 0.0

    def _carries_device(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == DEVICE_HEADER and value:
                return True
            if name == b"cookie" and self.device_cookie in value:
                return True
        return False
