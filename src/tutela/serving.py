"""How `tutela serve` listens: every configured address on one port, and start-up warnings.

The console's default address is `http://localhost:8000`: browsers refuse an IP address as
a WebAuthn relying-party id, so passkeys and security keys (which employees with a path to
customer content must use, R4) work only at a host name. `localhost` resolves to both
127.0.0.1 and ::1, and browsers try either, so both are served by default.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from typing import Final
from urllib.parse import urlsplit

from tutela.settings import Settings

log = logging.getLogger("tutela.serve")

LOOPBACK: Final = ("127.0.0.1", "::1")


def listen_addresses(host: str) -> list[str]:
    """The addresses of a `host` setting: a comma-separated list; "localhost" means both
    loopback addresses."""
    found: list[str] = []
    for part in host.split(","):
        name = part.strip().strip("[]")
        for address in LOOPBACK if name == "localhost" else (name,):
            if address and address not in found:
                found.append(address)
    if not found:
        raise ValueError("No address to listen on.")
    return found


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def startup_warnings(settings: Settings, *, port: int) -> list[str]:
    """What an operator should know before anyone signs in (nothing secret in them)."""
    warnings: list[str] = []
    if is_ip_address(settings.rp_id):
        warnings.append(
            f"The WebAuthn relying-party id {settings.rp_id} is an IP address, which browsers "
            "refuse: passkeys and security keys cannot be added or used. Set TUTELA_PUBLIC_URL "
            "to a host name, e.g. http://localhost:8000."
        )
    public = urlsplit(settings.public_url)
    public_port = public.port or (443 if public.scheme == "https" else 80)
    if public.hostname in {"localhost", *LOOPBACK} and public_port != port:
        warnings.append(
            f"Serving on port {port} but TUTELA_PUBLIC_URL is {settings.public_url}: emailed "
            "links and passkeys use the public URL's origin."
        )
    return warnings


def bind(addresses: list[str], port: int, *, optional: frozenset[str]) -> list[socket.socket]:
    """One listening socket per address. An address in `optional` this machine lacks
    (::1 without IPv6) is skipped with a warning; any other failure is an error."""
    sockets: list[socket.socket] = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # ::1 alone: 127.0.0.1 has its own socket on the same port.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            lacking = exc.errno in {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}
            if address in optional and lacking:
                log.warning("not listening on %s: this machine has no such address", address)
                continue
            for opened in sockets:
                opened.close()
            raise
        sock.set_inheritable(True)
        sockets.append(sock)
    if not sockets:
        raise OSError(errno.EADDRNOTAVAIL, "no address to listen on could be bound")
    return sockets


WORKER_HEALTHCHECK_S = 60
"""How long an API worker of `tutela serve` may take to answer its supervisor's ping."""


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int | None) -> None:
    """Run uvicorn on every listening address (one socket each, shared by the workers)."""
    import uvicorn  # noqa: PLC0415
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    chosen_port = port or settings.port
    chosen_host = host or settings.host
    addresses = listen_addresses(chosen_host)
    for warning in startup_warnings(settings, port=chosen_port):
        log.warning("%s", warning)
    config = uvicorn.Config(
        "tutela.app:serve_app",
        factory=True,
        port=chosen_port,
        workers=workers or settings.api_workers,
        # uvloop and httptools (both in the lock), named so a missing one fails at start
        # instead of silently serving on the slower pure-Python loop and parser.
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        # uvicorn kills a worker that does not answer its ping within 5 s and starts
        # another: on loaded cores a starting worker misses it, over and over, and the
        # service never listens. A hung worker is still replaced, only later.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        # X-Forwarded-For only from the proxies named in settings, never by default.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
    )
    # "localhost"'s ::1 is optional: a machine without IPv6 still serves 127.0.0.1.
    named = {part.strip() for part in chosen_host.split(",")}
    optional = frozenset({"::1"}) if "localhost" in named else frozenset()
    sockets = bind(addresses, chosen_port, optional=optional)
    for sock in sockets:
        name = sock.getsockname()
        shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
        log.info("listening on http://%s:%d", shown, name[1])
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            uvicorn.Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
