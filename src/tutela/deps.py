"""Request dependencies shared by every part's routes, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tutela.container import Container
from tutela.core.errors import Forbidden, NotAuthenticated
from tutela.households import service as households
from tutela.households.models import Device
from tutela.identity import service as identity
from tutela.identity.models import SessionStage
from tutela.identity.service import AnyPrincipal, Principal, StaffPrincipal
from tutela.identity.signin import Client
from tutela.settings import Settings
from tutela.vault.service import Reader

SESSION_COOKIE = "tutela_session"
DEVICE_COOKIE = "tutela_device"
DEVICE_HEADER = "x-tutela-device"


def cookie_name(base: str, settings: Settings) -> str:
    """`__Host-` cookies (RFC 6265bis) cannot be set by a sibling subdomain; they need HTTPS."""
    return f"__Host-{base}" if settings.cookie_secure else base


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def get_container(request: Request) -> Container:
    # async: FastAPI would run a plain function in the thread pool, a hop for nothing.
    container: Container = request.app.state.container
    return container


def get_session(container: Annotated[Container, Depends(get_container)]) -> Iterator[Session]:
    with container.stores.session() as session:
        yield session


AppContainer = Annotated[Container, Depends(get_container)]
DbSession = Annotated[Session, Depends(get_session)]


def client_address(request: Request) -> str:
    """The peer's address (a trusted proxy's X-Forwarded-For is applied by the server)."""
    return request.client.host if request.client else ""


def client_of(request: Request, settings: Settings) -> Client:
    """The attempt's origin: address, user agent and known-device token (cookie or header)."""
    device = request.headers.get(DEVICE_HEADER) or request.cookies.get(
        cookie_name(DEVICE_COOKIE, settings)
    )
    return Client(
        address=client_address(request),
        user_agent=request.headers.get("user-agent", "")[:200],
        device_token=device[:100] if device else None,
    )


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


def check_same_origin(request: Request, settings: Settings | None = None) -> None:
    """Cookie-authenticated writes must come from our own pages (OWASP CSRF, Origin check).

    Fetch Metadata first; else `Origin`, else the origin of `Referer`, must be this
    request's own (its Host) or, given `settings`, the configured public URL.
    """
    if request.method not in UNSAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        # Fetch Metadata is set by the browser and cannot be forged by a page.
        if site not in {"same-origin", "none"}:
            raise Forbidden("Cross-site request refused.", code="cross_site_request")
        return
    origin = request.headers.get("origin")
    if origin is None and settings is not None:
        referer = urlsplit(request.headers.get("referer", ""))
        if referer.scheme and referer.netloc:
            origin = f"{referer.scheme}://{referer.netloc}"
    if origin is None:
        return
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    if settings is not None:
        allowed.add(settings.origin)
    if origin not in allowed:
        raise Forbidden("Cross-site request refused.", code="cross_site_request")


def signed_in(request: Request, session: DbSession, container: AppContainer) -> AnyPrincipal:
    """Any live session, whatever its stage: a customer's or an employee's."""
    token = bearer_token(request)
    if token is None:
        token = request.cookies.get(cookie_name(SESSION_COOKIE, container.settings))
        if token is None:
            raise NotAuthenticated("Sign in first.")
        check_same_origin(request)
    return identity.authenticate(session, token=token, now=container.clock.now())


AnySignedIn = Annotated[AnyPrincipal, Depends(signed_in)]


def require_full(principal: AnyPrincipal) -> None:
    """A session that must first enrol a factor or change its password can do nothing else."""
    if principal.stage == SessionStage.ENROL:
        raise Forbidden("Add a second factor before anything else.", code="mfa_enrolment_required")
    if principal.stage == SessionStage.CHANGE_PASSWORD:
        raise Forbidden(
            "Your password was found in a data breach: change it first.",
            code="password_change_required",
        )


def current_principal(request: Request, session: DbSession, container: AppContainer) -> Principal:
    """The signed-in customer with a full session: bearer token or the console's cookie."""
    principal = signed_in(request, session, container)
    if not isinstance(principal, Principal):
        raise NotAuthenticated("Sign in with a customer account.", code="customer_session_required")
    require_full(principal)
    return principal


def current_staff(request: Request, session: DbSession, container: AppContainer) -> StaffPrincipal:
    """A signed-in employee with a full session (a second factor enrolled, R4)."""
    principal = signed_in(request, session, container)
    if not isinstance(principal, StaffPrincipal):
        raise NotAuthenticated("Sign in with an employee account.", code="staff_session_required")
    require_full(principal)
    return principal


CurrentStaff = Annotated[StaffPrincipal, Depends(current_staff)]


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def current_reader(principal: CurrentPrincipal, session: DbSession) -> Reader:
    return Reader(
        household_id=principal.household_id,
        profile_ids=frozenset(
            households.visible_profile_ids(
                session,
                household_id=principal.household_id,
                account_id=principal.account_id,
                own_profile_id=principal.profile_id,
            )
        ),
    )


CurrentReader = Annotated[Reader, Depends(current_reader)]


def current_device(request: Request, session: DbSession, container: AppContainer) -> Device:
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated("A device token is needed.", code="device_token_required")
    return households.authenticate_device(session, token=token, now=container.clock.now())


CurrentDevice = Annotated[Device, Depends(current_device)]


def media_reader(
    principal: CurrentPrincipal, reader: CurrentReader, session: DbSession, container: AppContainer
) -> Reader:
    """A reader of recordings, checked live on every media route (R5): an account that can
    see camera media and has no second factor is refused, whatever stage its session was
    given at sign-in (it may have opened before the first camera arrived)."""
    if container.gate.camera_factor_missing(session, principal.owner, reader.profile_ids):
        raise Forbidden(
            "Add a second factor before you see camera recordings.",
            code="second_factor_required",
        )
    return reader


MediaReader = Annotated[Reader, Depends(media_reader)]
