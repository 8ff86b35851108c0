"""create_app(settings): routers, the problem+json error mapping (RFC 9457), middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tutela import __version__
from tutela.consent.api import router as consent_router
from tutela.consent.parental_api import router as parental_consent_router
from tutela.container import Container, build
from tutela.core.errors import TooManyAttempts, TutelaError
from tutela.deps import DEVICE_COOKIE, cookie_name
from tutela.erasure.api import router as erasure_router
from tutela.exports.api import router as exports_router
from tutela.hosts import HostCheck, answered_hosts, relative_redirects
from tutela.households.api import router as households_router
from tutela.identity.admission import busy as admission_busy
from tutela.identity.api import router as identity_router
from tutela.identity.door import SignInDoor
from tutela.identity.logins import too_many
from tutela.identity.passkey_api import router as passkey_router
from tutela.identity.recovery_api import router as recovery_router
from tutela.retention.api import router as retention_router
from tutela.settings import Settings
from tutela.transparency.api import router as transparency_router
from tutela.vault.api import ingest as ingest_router
from tutela.vault.api import items as items_router
from tutela.vault.device_api import device as device_state_router
from tutela.vault.summary_api import router as summary_router
from tutela.web.account import router as account_router
from tutela.web.consent import router as console_consent_router
from tutela.web.exports import router as console_exports_router
from tutela.web.parental import router as console_parental_router
from tutela.web.privacy import router as privacy_router
from tutela.web.recovery import router as console_recovery_router
from tutela.web.rights import router as rights_router
from tutela.web.routes import router as web_router
from tutela.web.routes import static_files, throttled_page
from tutela.web.staff import router as staff_console_router
from tutela.web.staff import staff_throttled_page
from tutela.web.transparency import router as console_transparency_router

log = logging.getLogger("tutela.http")
MEDIA_PATH = "/api/v1/ingest/media"
PROBLEM = "application/problem+json"
_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "invalid_input",
}


def problem(
    status: int, code: str, title: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"urn:tutela:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        **extra,
    }
    headers = {"www-authenticate": 'Bearer realm="tutela"'} if status == 401 else {}
    if "retry_after" in extra:  # RFC 9110 §10.2.3
        headers["retry-after"] = str(max(1, math.ceil(float(extra["retry_after"]))))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def problem_of(exc: TutelaError, path: str) -> JSONResponse:
    """The problem+json answer to one of Tutela's errors (RFC 9457)."""
    return problem(exc.status, exc.code, exc.title, exc.detail, path, **exc.extra)


def _budget_wait(container: Container) -> Callable[[float], float]:
    """The door's read of the hash budget: only in defended mode (R6). The gate's
    admission is read at each call, as the gate itself does."""

    def wait(now: float) -> float:
        if not container.throttle.defended(now):
            return 0.0
        return container.gate.admission.wait(now)

    return wait


def _door_refusal(settings: Settings, *, busy: bool = False) -> Callable[[Scope, float], Response]:
    """What the sign-in door answers: exactly what the route answers to the same refusal
    (`too_many_attempts`, or `sign_in_busy` for a spent hash budget)."""

    def refuse(scope: Scope, wait: float) -> Response:
        refused: TooManyAttempts = admission_busy(wait) if busy else too_many(wait)
        if scope["path"].startswith("/api/"):
            return problem_of(refused, scope["path"])
        if scope["path"].startswith("/staff/"):
            return staff_throttled_page(StarletteRequest(scope), settings, refused)
        return throttled_page(StarletteRequest(scope), settings, refused)

    return refuse


OUTBOX_PUMP_SECONDS = 30.0
CLIENT_CLOSED = 499
BODY_CUT_OFF = "tutela.body_cut_off"


async def _outbox_pump(container: Container) -> None:
    while True:
        await asyncio.sleep(OUTBOX_PUMP_SECONDS)
        await asyncio.to_thread(container.deliver_notices)


async def _embedded_worker(container: Container) -> None:
    """Erasure jobs, retention sweeps and key epochs in the API process (embedded mode); on
    PostgreSQL, several processes and `tutela worker`s share the jobs through their row
    claims (turn it off with TUTELA_EMBEDDED_WORKER=false to keep them apart).

    A request recorded here or, on PostgreSQL, anywhere wakes it at once (`erasure/wake.py`);
    otherwise it looks every `TUTELA_EMBEDDED_WORKER_POLL_SECONDS`.
    """
    wakeup = container.erasure.wakeup
    try:
        while True:
            await asyncio.to_thread(wakeup.wait, container.settings.embedded_worker_poll_seconds)
            report = await asyncio.to_thread(container.erasure_pass)
            await asyncio.to_thread(container.retention_pass)
            await asyncio.to_thread(container.recovery_pass)
            await asyncio.to_thread(container.export_pass)
            await asyncio.to_thread(container.key_epoch_pass)
            if report.progressed:
                wakeup.local()  # more may be due already: look again at once
    except asyncio.CancelledError:
        wakeup.local()  # the thread still in `wait` returns, so the process can exit
        raise


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TutelaError)
    async def tutela_error(request: Request, exc: TutelaError) -> JSONResponse:
        response = problem_of(exc, request.url.path)
        if exc.notices_queued:
            # A refused sign-in can still have queued a link or a notice: send it now.
            response.background = BackgroundTask(request.app.state.container.deliver_notices)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations and messages only: the offending input may be personal data.
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        return problem(
            422,
            "invalid_input",
            "Invalid input",
            "The request is not valid.",
            request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "Request refused."
        return problem(exc.status_code, code, detail, detail, request.url.path)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left mid-body: nothing of ours failed, and nobody reads an answer.
        # 499 ("client closed request", as nginx logs it) keeps it apart from our errors.
        if not request.scope.get(BODY_CUT_OFF):  # else BodyLimit answers 413 and logs it
            route = getattr(request.scope.get("route"), "path", "(no route)")
            log.info("client disconnected before its request was read, route=%s", route)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(RedisError)
    async def throttle_store_down(request: Request, exc: RedisError) -> JSONResponse:
        # Sign-in never runs unthrottled: without its shared counters it waits (R6).
        log.error("throttle store unavailable: %s", type(exc).__name__)
        return problem(
            503,
            "service_unavailable",
            "Temporarily unavailable",
            "Sign-in is unavailable for a moment; try again shortly.",
            request.url.path,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        # The type only: a message or traceback could carry personal data.
        route = getattr(request.scope.get("route"), "path", "(no route)")
        log.error("unexpected error %s id=%s route=%s", type(exc).__name__, error_id, route)
        return problem(
            500,
            "internal_error",
            "Internal error",
            f"Something went wrong on our side (error {error_id}).",
            request.url.path,
        )


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (
        CSP := b"content-security-policy",
        b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
# Pages and API answers carry personal data: no shared or browser cache keeps them.
NO_STORE = (b"cache-control", b"no-store")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class RequestLog:
    """Adds security headers and logs one line per request: method, path, status, time.

    A plain ASGI middleware (no per-request task group), so uploads stream through it at
    no cost. Never the query string or the body: they may carry personal data.
    """

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        send = relative_redirects(scope, send)
        # The interactive API docs load Swagger UI's scripts; every other page loads only ours.
        extra = [h for h in SECURITY_HEADERS if scope["path"] != "/api/docs" or h[0] != CSP]
        if not scope["path"].startswith("/static/"):
            extra.append(NO_STORE)
        if self.https:
            extra.append(HSTS)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if log.isEnabledFor(logging.INFO):
                # The route's template, not the path: no ids of people's records in logs,
                # and nothing a client can shape into a forged log line.
                route = getattr(scope.get("route"), "path", "(no route)")
                log.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    route,
                    status,
                    (time.perf_counter() - started) * 1000,
                )


class BodyLimit:
    """Refuses request bodies over a limit before any route reads them (413, RFC 9457).

    A declared `Content-Length` over the limit is refused at once; bodies without one are
    counted as they arrive. Uploads of media have their own, larger limit.
    """

    def __init__(self, app: ASGIApp, *, limit: int, media_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.media_limit = media_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.media_limit if scope["path"] == MEDIA_PATH else self.limit
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(scope, receive, send, limit)
                return
        received = 0
        too_large = False

        async def counted() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Cut the route off as if the client had gone; the 413 is ours to send.
                    too_large = True
                    scope[BODY_CUT_OFF] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large:
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(
            413,
            "payload_too_large",
            "Upload too large",
            f"Request bodies here are limited to {limit} bytes.",
            scope["path"],
        )
        await response(scope, receive, send)


def serve_app() -> FastAPI:
    """The factory `tutela serve` gives uvicorn. Each worker process is a fresh
    interpreter: it sets up Tutela's logging (one line, no traces) before anything logs."""
    from tutela.logging import configure  # noqa: PLC0415

    settings = Settings()
    configure(settings.log_level)
    return create_app(settings)


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    settings = settings or (container.settings if container else Settings())
    owned = container is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Retries of queued notices, without a separate worker process (embedded mode);
        # with several processes and workers, the outbox's row claims keep it at once.
        tasks = [asyncio.create_task(_outbox_pump(app.state.container))]
        if settings.embedded_worker:
            tasks.append(asyncio.create_task(_embedded_worker(app.state.container)))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if owned:
            app.state.container.close()

    app = FastAPI(
        title="Tutela",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.container = container or build(settings)
    _add_error_handlers(app)

    # Innermost of the three: refused sign-ins are still logged and carry the headers.
    app.add_middleware(
        SignInDoor,
        throttle=app.state.container.throttle,
        clock=app.state.container.clock,
        refuse=_door_refusal(settings),
        device_cookie=cookie_name(DEVICE_COOKIE, settings),
        busy_wait=_budget_wait(app.state.container),
        refuse_busy=_door_refusal(settings, busy=True),
    )
    app.add_middleware(
        BodyLimit, limit=settings.max_json_bytes, media_limit=settings.max_upload_bytes
    )
    if settings.checks_host:
        hosts = answered_hosts(settings.public_url, settings.allowed_hosts)
        app.add_middleware(HostCheck, hosts=hosts, refuse=problem)
    app.add_middleware(RequestLog, https=settings.cookie_secure)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for router in (
        identity_router,
        passkey_router,
        recovery_router,
        households_router,
        ingest_router,
        device_state_router,
        items_router,
        transparency_router,
        erasure_router,
        exports_router,
        retention_router,
        consent_router,
        parental_consent_router,
        web_router,
        account_router,
        privacy_router,
        console_consent_router,
        console_parental_router,
        rights_router,
        summary_router,
        staff_console_router,
        console_recovery_router,
        console_transparency_router,
        console_exports_router,
    ):
        app.include_router(router)
    app.mount("/static", static_files(), name="static")
    return app
