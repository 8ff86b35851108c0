"""What the console's forms share: sign-in, customers' and employees' alike (R4, R5, S2),
and the fresh confirmation that a dangerous action asks for (C7).

The password form's page with its fresh CSRF cookie and the check of that cookie, the
Retry-After of a throttled page, and the second step's answer as a form posts it: an
authenticator code, a recovery code or a WebAuthn assertion made by `static/webauthn.js`.
The recovery pages read the same answer when an account has a second factor. The routes
still check the origin themselves (login CSRF); nothing here decides who may sign in.
The customer pages find their signed-in customer here, and take a step-up code or
password typed into their form through `step_up` (C7).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tutela.core.errors import Forbidden, NotAuthenticated, TooManyAttempts
from tutela.deps import AppContainer, DbSession, client_of, cookie_name, current_principal
from tutela.identity.models import PasskeyAudience, SessionKind
from tutela.identity.service import AnyPrincipal, Principal
from tutela.identity.signin import SignInOutcome
from tutela.settings import Settings

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
CSRF_COOKIE = "tutela_csrf"


def csrf_form_page(
    request: Request, settings: Settings, name: str, *, status: int = 200, **context: Any
) -> Response:
    """A page whose form carries a fresh CSRF token, set as a strict cookie as well."""
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, name, {"csrf": token, **context}, status_code=status
    )
    response.set_cookie(
        cookie_name(CSRF_COOKIE, settings),
        token,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )
    return response


def csrf_matches(request: Request, settings: Settings, submitted: str) -> bool:
    """Whether the posted token is the one in this browser's CSRF cookie."""
    expected = request.cookies.get(cookie_name(CSRF_COOKIE, settings), "")
    return bool(expected) and secrets.compare_digest(expected, submitted)


def with_retry_after(response: Response, refused: TooManyAttempts) -> Response:
    """The throttle's wait as a Retry-After header, in whole seconds, at least one (S2)."""
    retry_after = float(refused.extra.get("retry_after", 1))
    response.headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    return response


def json_object(text: str) -> dict[str, Any]:
    """A posted WebAuthn credential; anything but a JSON object is an empty one, which
    every ceremony refuses."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True)
class FactorAnswer:
    """A second step's answer: six digits are an authenticator code, anything else typed a
    recovery code; a WebAuthn assertion when the form posted one."""

    code: str | None
    recovery_code: str | None
    webauthn: dict[str, Any] | None


def factor_answer(code: str, webauthn: str) -> FactorAnswer:
    cleaned = code.strip().replace(" ", "")
    is_totp = cleaned.isdigit() and len(cleaned) == 6
    return FactorAnswer(
        code=cleaned if is_totp else None,
        recovery_code=cleaned if cleaned and not is_totp else None,
        webauthn=json_object(webauthn) if webauthn else None,
    )


def complete_factor(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    *,
    challenge: str,
    code: str,
    webauthn: str,
) -> SignInOutcome:
    """The second step of a console sign-in; its notices go out after the answer."""
    answer = factor_answer(code, webauthn)
    background.add_task(container.deliver_notices)
    return container.gate.complete_factor(
        session,
        challenge=challenge,
        code=answer.code,
        recovery_code=answer.recovery_code,
        webauthn=answer.webauthn,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )


def passkey_sign_in(
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    *,
    credential: str,
    audience: PasskeyAudience,
) -> SignInOutcome:
    """A usernameless passkey sign-in to a cookie session; only a passkey of `audience`
    (customers' or employees') answers its ceremony."""
    assertion = json_object(credential)
    background.add_task(container.deliver_notices)
    return container.gate.passkey_sign_in(
        session,
        assertion=assertion,
        audience=audience,
        kind=SessionKind.COOKIE,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )


def signed_in_customer(
    request: Request, session: DbSession, container: AppContainer
) -> Principal | Response:
    """The customer signed in, or where to send a browser that is not (yet): the sign-in
    page, or the security page for a session that must first enrol a factor."""
    try:
        # A cross-site write is refused here (403), before anything is read or changed.
        return current_principal(request, session, container)
    except NotAuthenticated:
        return RedirectResponse("/login", status_code=303)
    except Forbidden as exc:
        if exc.code == "cross_site_request":
            raise
        return RedirectResponse("/account/security", status_code=303)


def answer_step_up(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: AnyPrincipal,
    *,
    code: str,
    password: str,
) -> None:
    """Confirm it is you with what a form posted (C7): an authenticator or recovery code,
    or the password for an account without a factor. Throttled as a sign-in is."""
    answer = factor_answer(code, "")
    container.gate.step_up(
        session,
        principal=principal,
        password=password or None,
        code=answer.code,
        recovery_code=answer.recovery_code,
        webauthn=None,
        webauthn_token=None,
        client=client_of(request, container.settings),
        now=container.clock.now(),
    )


def step_up(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    code: str,
    password: str,
) -> Principal:
    """`answer_step_up`, then the customer as the session now stands (stepped up)."""
    answer_step_up(request, session, container, principal, code=code, password=password)
    return current_principal(request, session, container)


def require_fresh_step_up(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    *,
    code: str,
    password: str,
) -> Principal:
    """The customer once a dangerous action may go ahead (C7): a code or password the
    form posted is tried first; without a step-up in the last few minutes it raises
    `StepUpRequired` (and the step-up's own refusals)."""
    if code.strip() or password:
        principal = step_up(request, session, container, principal, code, password)
    container.gate.require_step_up(session, principal, now=container.clock.now())
    return principal
