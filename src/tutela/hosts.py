"""The `Host` header: only names Tutela is served under, never echoed into a redirect.

OWASP (Web Security Testing Guide, "Testing for Host Header Injection"): a server that
builds links or redirects from the request's `Host` lets a client point them elsewhere.
Tutela's redirects are made relative, whatever the framework builds, and the host check
refuses other names outright (on by default in production).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(value: str) -> str:
    """The name part of a `Host` header (RFC 9110 §7.2): no port, lower case, no brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def answered_hosts(public_url: str, extra: Iterable[str]) -> frozenset[str]:
    """Loopback, the public URL's host and the operator's extra names."""
    public = urlsplit(public_url).hostname
    names = {host_name(name) for name in extra if name}
    return LOOPBACK | names | ({public.lower()} if public else set())


def relative_location(headers: list[tuple[bytes, bytes]], host: str) -> list[tuple[bytes, bytes]]:
    """Response headers with an absolute `Location` on the request's `host` made relative.

    Starlette's trailing-slash redirect (and `url_for`) build absolute URLs from `Host`;
    a relative reference (RFC 9110 §10.2.2) sends the browser back to the host it asked,
    so a forged `Host` cannot steer it. A `Location` naming another site on purpose
    (none today) is left alone.
    """
    out = []
    for name, value in headers:
        shown = value
        if name.lower() == b"location":
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc and parts.netloc.lower() == host.lower():
                # `//evil.example/x` would still name a host: one leading slash only.
                path = "/" + parts.path.lstrip("/")
                query = f"?{parts.query}" if parts.query else ""
                fragment = f"#{parts.fragment}" if parts.fragment else ""
                shown = (path + query + fragment).encode("latin-1")
        out.append((name, shown))
    return out


class HostCheck:
    """Refuses a request whose `Host` is not a name Tutela is served under (400).

    A plain ASGI middleware, before routing: nothing is read, opened or looked up for a
    forged host. `refuse(status, code, title, detail, instance)` makes the problem+json.
    """

    def __init__(
        self, app: ASGIApp, *, hosts: frozenset[str], refuse: Callable[..., Response]
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
        if host_name(host.decode("latin-1")) in self.hosts:
            await self.app(scope, receive, send)
            return
        response = self.refuse(
            400,
            "invalid_host",
            "Unknown host",
            "This server does not answer to that host name.",
            scope.get("path", ""),
        )
        await response(scope, receive, send)


def relative_redirects(scope: Scope, send: Send) -> Send:
    """`send` with a redirect to the request's own host made relative (`relative_location`)."""
    host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"").decode("latin-1")

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            message["headers"] = relative_location(list(message.get("headers", [])), host)
        await send(message)

    return sending
