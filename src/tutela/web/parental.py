"""The console page where a parent verifies their consent for a child (C3, C4, C5, C7):
why Tutela asks, the attempts so far, the four methods as forms of their own, and asking
the other parent by email.

Thin: every rule of a verification is `consent.parental.give_consent`'s, the use case the
API calls; an ask is `consent.asks.ask_parent`'s. A form asks for a fresh second factor
(or the password, without one) in itself when the session has none (C7), as the
deletion confirmations do, so a file need not be sent twice. Each POST is a cookie
session's, refused cross-site before anything is read (as every console POST).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tutela.consent import asks, parental, questions
from tutela.consent.models import Channel
from tutela.consent.parental_api import MAX_PURPOSES, verifiers_of
from tutela.consent.service import Whose
from tutela.core.errors import (
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyAttempts,
    TutelaError,
)
from tutela.deps import AppContainer, DbSession
from tutela.households import service as households
from tutela.households.models import Profile
from tutela.identity import factors
from tutela.identity.service import Principal
from tutela.web.consent import PAGE as CONSENT_PAGE
from tutela.web.consent import PARENTAL_PAGE, PARENTAL_PAGE_NAME, PostedFields
from tutela.web.forms import (
    require_fresh_step_up,
    signed_in_customer,
    templates,
    with_retry_after,
)
from tutela.web.parental_forms import (
    ANSWER,
    FRESH_QUESTIONS,
    METHOD_TITLES,
    Problem,
    Sent,
    attempt_lines,
    available_methods,
    parental_method,
    problem_of,
)

router = APIRouter(include_in_schema=False)
DONE = {"asked"}


def _guardian(session: DbSession, principal: Principal, child_id: uuid.UUID) -> Whose:
    """The child whose guardian is signed in; anything else is not found here (an adult's
    profile included: it has no parent to verify)."""
    try:
        return parental.guardian_of_child(session, principal, child_id)
    except InvalidInput:
        raise NotFound("No such profile.", code="not_found") from None


def _questions(
    container: AppContainer, who: Whose, principal: Principal, sent: Sent | None, fresh: bool
) -> questions.Drawn | None:
    """The questions to show: those the form posted when it is sent back for another
    reason than its answers, new ones otherwise; none where the bank may not verify."""
    if not available_methods(container.settings)["knowledge_questions"]:
        return None
    now = container.clock.now()
    if sent is not None and sent.challenge and not fresh:
        try:
            return questions.reopen(
                container.vault.keys,
                challenge=sent.challenge,
                child_profile_id=who.subject.profile_id,
                account_id=principal.account_id,
                now=now,
            )
        except TutelaError:
            pass
    return questions.draw(
        container.vault.keys,
        child_profile_id=who.subject.profile_id,
        account_id=principal.account_id,
        count=container.settings.parental_consent_questions,
        now=now,
    )


def _page(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    who: Whose,
    *,
    sent: Sent | None = None,
    problem: Problem | None = None,
) -> Response:
    subject, ledger, settings = who.subject, container.consent, container.settings
    profile = session.get(Profile, (subject.household_id, subject.profile_id))
    if profile is None:  # found a moment ago: only a concurrent erasure gets here
        raise NotFound("No such profile.", code="not_found")
    now = container.clock.now()
    fresh = principal.stepped_up_at is not None and now - principal.stepped_up_at <= timedelta(
        minutes=settings.step_up_minutes
    )
    owned = factors.list_factors(session, principal.owner)
    catalogue = ledger.catalogue
    verified = ledger.verified_parental_consent(session, subject, principal.account_id)
    done = request.query_params.get("done")
    context: dict[str, Any] = {
        "principal": principal,
        "profile": households.profile_view(container.vault.keys, profile),
        "consent_page": CONSENT_PAGE.format(profile_id=subject.profile_id),
        "action": PARENTAL_PAGE.format(profile_id=subject.profile_id),
        "attempts": attempt_lines(parental.attempts_of(session, subject), principal.account_id),
        "verified": verified,
        "purposes": [catalogue[n] for n in catalogue.names if not catalogue[n].separate],
        "separate": [catalogue[n] for n in catalogue.names if catalogue[n].separate],
        "notice_version": catalogue.notice_version,
        "methods": METHOD_TITLES,
        "available": available_methods(settings),
        "fake_card": settings.payment_provider == "fake",
        "fake_id": settings.id_checker == "fake",
        "questions": _questions(
            container,
            who,
            principal,
            sent,
            fresh=problem is not None and problem.code in FRESH_QUESTIONS,
        ),
        "answer_field": ANSWER,
        "step_up": not fresh,
        "has_factor": bool(owned),
        "code_factor": any(f.kind != "webauthn" for f in owned)
        or factors.recovery_codes_left(session, principal.owner) > 0,
        "ask_days": container.policy.consent_contact_max_age.days,
        "sent": sent,
        "problem": problem,
        "done": done if done in DONE else None,
    }
    return templates.TemplateResponse(
        request,
        "parental.html",
        context,
        status_code=problem.status if problem is not None else 200,
    )


@router.get(PARENTAL_PAGE, response_class=HTMLResponse, name=PARENTAL_PAGE_NAME)
def parental_page(
    profile_id: uuid.UUID, request: Request, session: DbSession, container: AppContainer
) -> Response:
    """Verify your consent as a child's parent: why, the attempts so far, four ways (C3)."""
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    return _page(request, session, container, principal, _guardian(session, principal, profile_id))


@router.post(PARENTAL_PAGE)
def verify_parent(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    fields: PostedFields,
    method: Annotated[str, Form(max_length=24)] = "",
    notice_version: Annotated[str, Form(max_length=8)] = "",
    purpose: Annotated[list[str], Form(max_length=MAX_PURPOSES + 1)] = [],  # noqa: B006
    document: Annotated[UploadFile | None, File()] = None,
    typed_name: Annotated[str, Form(max_length=200)] = "",
    signed_on: Annotated[str, Form(max_length=10)] = "",
    card_token: Annotated[str, Form(max_length=200)] = "",
    challenge: Annotated[str, Form(max_length=2000)] = "",
    code: Annotated[str, Form(max_length=40)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """One method's form: step-up first when due (C7), then the same use case as the
    API's (`give_consent`), with the purposes the parent ticked; success goes to the
    consent page with a confirmation, a refusal comes back with its reason."""
    # A cross-site write is refused here (403), before anything is read or changed.
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    who = _guardian(session, principal, profile_id)
    chosen = parental_method(method)
    sent = Sent(
        method=chosen.value if chosen else "",
        purposes=tuple(dict.fromkeys(p.strip() for p in purpose if p.strip())),
        typed_name=typed_name,
        signed_on=signed_on,
        challenge=challenge,
        answers={
            k.removeprefix(ANSWER): v[:200] for k, v in fields.items() if k.startswith(ANSWER)
        },
    )
    body = document.file.read() if document is not None and document.filename else None
    try:
        if chosen is None:
            raise InvalidInput("That is not a way to verify a parent.", code="invalid_method")
        if len(sent.purposes) > MAX_PURPOSES:
            raise InvalidInput("Too many purposes.", code="too_many_purposes")
        try:
            version = int(notice_version)
            signed = date.fromisoformat(signed_on) if signed_on.strip() else None
        except ValueError:
            raise InvalidInput(
                "The date you signed is not a date.", code="signed_date_out_of_range"
            ) from None
        principal = require_fresh_step_up(
            request, session, container, principal, code=code, password=password
        )
        attempt = parental.Attempt(
            method=chosen,
            purposes=sent.purposes,
            notice_version=version,
            document=body,
            document_type=document.content_type if document is not None else None,
            typed_name=typed_name or None,
            signed_on=signed,
            card_token=card_token or None,
            challenge=challenge or None,
            answers=sent.answers,
        )
        parental.give_consent(
            session,
            verifiers_of(container),
            principal,
            profile_id,
            attempt,
            now=container.clock.now(),
            channel=Channel.CONSOLE,
        )
    except NotAuthenticated as exc:
        if exc.code == "session_ended":
            return RedirectResponse("/login", status_code=303)
        return _refused(request, session, container, principal, who, sent, exc, body)
    except TutelaError as exc:
        return _refused(request, session, container, principal, who, sent, exc, body)
    background.add_task(container.deliver_notices)
    target = CONSENT_PAGE.format(profile_id=profile_id) + "?done=verified"
    return RedirectResponse(target, status_code=303)


def _refused(
    request: Request,
    session: DbSession,
    container: AppContainer,
    principal: Principal,
    who: Whose,
    sent: Sent,
    exc: TutelaError,
    body: bytes | None,
) -> Response:
    session.rollback()
    problem = problem_of(sent.method or "form", exc, file_sent=body is not None)
    response = _page(request, session, container, principal, who, sent=sent, problem=problem)
    return with_retry_after(response, exc) if isinstance(exc, TooManyAttempts) else response


@router.post(PARENTAL_PAGE + "/ask")
def ask_other_parent(
    profile_id: uuid.UUID,
    request: Request,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    """Ask the child's other parent by email to give consent (C5): the address is kept
    only for this, and deleted if no consent comes in time."""
    # A cross-site write is refused here (403), before anything is read or changed.
    principal = signed_in_customer(request, session, container)
    if isinstance(principal, Response):
        return principal
    who = _guardian(session, principal, profile_id)
    try:
        asks.ask_parent(
            session,
            container.vault.keys,
            principal,
            profile_id,
            email=email,
            origin=container.settings.origin,
            max_age=container.policy.consent_contact_max_age,
            asks_per_day=container.settings.parental_consent_asks_per_day,
            now=container.clock.now(),
        )
    except TutelaError as exc:
        session.rollback()
        problem = problem_of("ask", exc, file_sent=False)
        response = _page(request, session, container, principal, who, problem=problem)
        return with_retry_after(response, exc) if isinstance(exc, TooManyAttempts) else response
    background.add_task(container.deliver_notices)
    target = PARENTAL_PAGE.format(profile_id=profile_id) + "?done=asked#ask"
    return RedirectResponse(target, status_code=303)
