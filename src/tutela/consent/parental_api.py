"""Routes of verifiable parental consent (C3-C5, C7): verify a guardian and grant what
they chose, see the attempts, draw knowledge questions, ask a parent by email. Thin:
parse, call `consent.parental` or `consent.asks`, answer."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile
from pydantic import BaseModel, Field

from tutela.consent import asks, parental, questions
from tutela.consent.api import ConsentOut, _out
from tutela.consent.idcheck import id_checker
from tutela.consent.models import Method
from tutela.consent.payments import payment_provider
from tutela.core.errors import InvalidInput
from tutela.deps import AppContainer, CurrentPrincipal, DbSession

router = APIRouter(prefix="/api/v1", tags=["consent"])

MAX_ANSWERS_CHARS = 4000
MAX_PURPOSES = 20


class ParentalConsentOut(BaseModel):
    id: uuid.UUID
    method: str
    verified: bool
    at: datetime
    consent: ConsentOut


class AttemptOut(BaseModel):
    id: uuid.UUID
    method: str
    verified: bool
    at: datetime
    notice_version: int
    by_you: bool


class QuestionOut(BaseModel):
    id: str
    text: str
    choices: list[str]


class QuestionsOut(BaseModel):
    challenge: str
    expires_at: datetime
    questions: list[QuestionOut]


class AskIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)


class AskOut(BaseModel):
    contact_id: uuid.UUID
    expires_at: datetime
    """When the address is deleted if no consent has come (C5)."""


def verifiers_of(container: AppContainer) -> parental.Verifiers:
    """The ports verification needs, as the API and the console both hand them over."""
    settings = container.settings
    return parental.Verifiers(
        ledger=container.consent,
        vault=container.vault,
        erasure=container.erasure,
        payments=lambda: payment_provider(settings),
        ids=lambda: id_checker(settings),
        open_session=container.stores.session,
        hold=container.hold,
        failures_per_day=settings.parental_consent_failures_per_day,
        question_count=settings.parental_consent_questions,
        production=settings.environment == "production",
        origin=settings.origin,
    )


def _answers(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw[:MAX_ANSWERS_CHARS])
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise InvalidInput(
            "Answers are a JSON object of question id to answer.", code="invalid_answers"
        )
    return data


@router.post(
    "/profiles/{child_id}/parental-consent", status_code=201, response_model=ParentalConsentOut
)
def give_parental_consent(
    child_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
    method: Annotated[Method, Form()],
    notice_version: Annotated[int, Form(ge=1)],
    purposes: Annotated[list[str], Form()],
    document: Annotated[UploadFile | None, File()] = None,
    typed_name: Annotated[str | None, Form(max_length=200)] = None,
    signed_on: Annotated[date | None, Form()] = None,
    card_token: Annotated[str | None, Form(max_length=200)] = None,
    challenge: Annotated[str | None, Form(max_length=2000)] = None,
    answers: Annotated[str | None, Form(max_length=MAX_ANSWERS_CHARS)] = None,
) -> ParentalConsentOut:
    """Verify the signed-in guardian as the child's parent by `method` (multipart form):
    `signed_form` (`document`: the signed form as PDF, JPEG or PNG, `typed_name`,
    `signed_on`), `card_check` (`card_token` from the card form), `knowledge_questions`
    (`challenge` and `answers`, a JSON object, from `GET .../parental-consent/questions`)
    or `id_check` (`document`: a JPEG photo of the ID, erased right after the check).
    On success the guardian's grants of `purposes` are appended, resting on it (C3);
    `third_party_disclosure` is never one of them (422 `consent_bundled`, C4). Needs a
    recent step-up (C7). A failed attempt is recorded and answered 403
    `parental_consent_not_verified`; too many in a day, 429 `parental_consent_attempts`."""
    now = container.clock.now()
    container.gate.require_step_up(session, principal, now=now)
    if len(purposes) > MAX_PURPOSES:
        raise InvalidInput("Too many purposes.", code="too_many_purposes")
    body = document.file.read() if document is not None else None
    attempt = parental.Attempt(
        method=method,
        purposes=tuple(dict.fromkeys(p.strip() for p in purposes if p.strip())),
        notice_version=notice_version,
        document=body,
        document_type=document.content_type if document is not None else None,
        typed_name=typed_name,
        signed_on=signed_on,
        card_token=card_token,
        challenge=challenge,
        answers=_answers(answers),
    )
    outcome = parental.give_consent(
        session, verifiers_of(container), principal, child_id, attempt, now=now
    )
    background.add_task(container.deliver_notices)
    return ParentalConsentOut(
        id=outcome.consent_id,
        method=outcome.method,
        verified=True,
        at=outcome.at,
        consent=_out(container.consent, child_id, outcome.state),
    )


@router.get("/profiles/{child_id}/parental-consent", response_model=list[AttemptOut])
def parental_consent_attempts(
    child_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession
) -> list[AttemptOut]:
    """Every verification attempt for the child, failed ones too; never their evidence."""
    who = parental.guardian_of_child(session, principal, child_id)
    return [
        AttemptOut(
            id=a.id,
            method=a.method,
            verified=a.verified,
            at=a.at,
            notice_version=a.notice_version,
            by_you=a.guardian_account_id == principal.account_id,
        )
        for a in parental.attempts_of(session, who.subject)
    ]


@router.get("/profiles/{child_id}/parental-consent/questions", response_model=QuestionsOut)
def parental_consent_questions(
    child_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> QuestionsOut:
    """Knowledge questions to answer for `knowledge_questions`, bound to this guardian
    and child for 15 minutes (the answers are not sent)."""
    who = parental.guardian_of_child(session, principal, child_id)
    questions.require_bank(production=container.settings.environment == "production")
    drawn = questions.draw(
        container.vault.keys,
        child_profile_id=who.subject.profile_id,
        account_id=principal.account_id,
        count=container.settings.parental_consent_questions,
        now=container.clock.now(),
    )
    return QuestionsOut(
        challenge=drawn.challenge,
        expires_at=drawn.expires_at,
        questions=[
            QuestionOut(id=q.id, text=q.text, choices=list(q.choices)) for q in drawn.questions
        ],
    )


@router.post("/profiles/{child_id}/parental-consent/ask", status_code=202, response_model=AskOut)
def ask_for_parental_consent(
    child_id: uuid.UUID,
    payload: AskIn,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    background: BackgroundTasks,
) -> AskOut:
    """Ask a parent by email to give consent for a child of this household (C5): the
    address is kept sealed only for this, and deleted if no consent comes within the
    retention policy's limit. 429 `consent_asks_exhausted` past the day's asks."""
    asked = asks.ask_parent(
        session,
        container.vault.keys,
        principal,
        child_id,
        email=payload.email,
        origin=container.settings.origin,
        max_age=container.policy.consent_contact_max_age,
        asks_per_day=container.settings.parental_consent_asks_per_day,
        now=container.clock.now(),
    )
    background.add_task(container.deliver_notices)
    return AskOut(contact_id=asked.contact_id, expires_at=asked.expires_at)
