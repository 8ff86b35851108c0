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
DEVICE_HEADER = b"x-tutela-device"

Refusal = Callable[[Scope, float], Response]


def guarded(path: str, paths: tuple[str, ...] = GUARDED_PATHS) -> bool:
    """Whether `path` is one of the sign-in paths (or below one)."""
    return any(path == p or path.startswith(p + "/") for p in paths)


class SignInDoor:
    """Refuses POSTs to the sign-in paths from a source the throttle is slowing down.

    `refuse(scope, wait)` builds the answer: the same body the route gives for the same
    refusal (problem+json for the API, the sign-in page for the console).
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
    ) -> None:
        self.app = app
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
            await self.app(scope, receive, send)
            return
        response = self.refuse(scope, wait)
        await response(scope, receive, send)

    def _carries_device(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == DEVICE_HEADER and value:
                return True
            if name == b"cookie" and self.device_cookie in value:
                return True
        return False
