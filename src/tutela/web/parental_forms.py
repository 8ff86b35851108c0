"""What the console's parental-consent page shows and reads back (C3, C4, C7): the
methods in a parent's words, what a form posted (to show it again when it is sent back),
and a refusal turned into a message tied to the field it is about. No rule of
verification lives here: that is `consent.parental`'s."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from tutela.consent.models import PARENTAL_METHODS, Method, ParentalConsent
from tutela.core.errors import NotAuthenticated, StepUpRequired, TutelaError
from tutela.settings import Settings

ANSWER: Final = "answer."
"""A knowledge question's radio group is named `answer.<question id>`."""

METHOD_TITLES: Final = {
    Method.SIGNED_FORM.value: "Signed consent form",
    Method.CARD_CHECK.value: "Payment card check",
    Method.KNOWLEDGE_QUESTIONS.value: "Questions only an adult can answer",
    Method.ID_CHECK.value: "Photo of a government ID",
}

REASON_WORDS: Final = {
    "not_a_form": "The file is not a PDF, JPEG or PNG of the signed form.",
    "signed_date_out_of_range": ("The date you signed must be today or within the last 30 days."),
    "declined": "The card was declined.",
    "invalid_token": "The card could not be checked: the card form's token was not valid.",
    "wrong_answers": "Not every answer was right. New questions are shown below.",
    "not_an_adult": "The ID does not show an adult.",
    "unreadable": "The ID could not be read. Try a sharper photo of its front.",
}

FIELD_OF: Final = {
    "no_purposes": ("purposes",),
    "consent_bundled": ("purposes",),
    "unknown_purpose": ("purposes",),
    "too_many_purposes": ("purposes",),
    "form_incomplete": ("document", "typed_name", "signed_on"),
    "not_a_form": ("document",),
    "signed_date_out_of_range": ("signed_on",),
    "card_token_missing": ("card_token",),
    "declined": ("card_token",),
    "invalid_token": ("card_token",),
    "questions_invalid": ("questions",),
    "questions_expired": ("questions",),
    "wrong_answers": ("questions",),
    "document_missing": ("document",),
    "unsupported_document": ("document",),
    "empty_upload": ("document",),
    "media_type_mismatch": ("document",),
    "not_an_adult": ("document",),
    "unreadable": ("document",),
    "invalid_email": ("email",),
}
FRESH_QUESTIONS: Final = {"wrong_answers", "questions_invalid", "questions_expired"}
"""After these, the questions shown are new ones (the old challenge is spent or bad)."""


@dataclass(frozen=True)
class Sent:
    """What a form posted, shown again when it is sent back. Never the card token, the
    file or a step-up answer: those are asked for again."""

    method: str
    purposes: tuple[str, ...] = ()
    typed_name: str = ""
    signed_on: str = ""
    challenge: str = ""
    answers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """A refusal as the page shows it: in which form (`method`, or "ask"), on which
    fields (none: the whole form), in words."""

    form: str
    code: str
    """The refusal's code, or the failed verification's reason."""
    message: str
    fields: tuple[str, ...] = ()
    status: int = 422

    def on(self, form: str, name: str) -> bool:
        return self.form == form and name in self.fields


def problem_of(form: str, exc: TutelaError, *, file_sent: bool) -> Problem:
    """The message a parent reads for a refusal of `form`, and the fields it is about."""
    if isinstance(exc, NotAuthenticated | StepUpRequired):
        message = exc.detail
        if isinstance(exc, StepUpRequired):
            message = "Confirm it is you first, below."
        return Problem(form, exc.code, _again(message, file_sent), ("step_up",), exc.status)
    if exc.code == "parental_consent_not_verified":
        reason = str(exc.extra.get("reason", ""))
        left = int(exc.extra.get("attempts_left", 0))
        words = REASON_WORDS.get(reason, "That did not verify you as the parent.")
        tail = (
            f" Attempts left today: {left}."
            if left > 0
            else " No attempts are left today: try again tomorrow."
        )
        return Problem(form, reason, words + tail, FIELD_OF.get(reason, ()), exc.status)
    return Problem(
        form, exc.code, _again(exc.detail, file_sent), FIELD_OF.get(exc.code, ()), exc.status
    )


def _again(message: str, file_sent: bool) -> str:
    if file_sent:
        return message + " Nothing was recorded; choose the file again."
    return message + " Nothing was recorded."


@dataclass(frozen=True)
class AttemptLine:
    """One past attempt as the page lists it: never its evidence."""

    id: uuid.UUID
    method: str
    verified: bool
    at: datetime
    by_you: bool


def attempt_lines(attempts: list[ParentalConsent], account_id: uuid.UUID) -> list[AttemptLine]:
    return [
        AttemptLine(
            id=a.id,
            method=METHOD_TITLES.get(a.method, a.method),
            verified=a.verified,
            at=a.at,
            by_you=a.guardian_account_id == account_id,
        )
        for a in attempts
    ]


def available_methods(settings: Settings) -> dict[str, bool]:
    """Which methods this installation can check: only test providers ship, and
    production refuses them (`consent.payments`, `consent.idcheck`, `consent.questions`)."""
    production = settings.environment == "production"
    return {
        Method.SIGNED_FORM.value: True,
        Method.CARD_CHECK.value: not (production and settings.payment_provider == "fake"),
        Method.KNOWLEDGE_QUESTIONS.value: not production,
        Method.ID_CHECK.value: not (production and settings.id_checker == "fake"),
    }


def parental_method(text: str) -> Method | None:
    return next((m for m in PARENTAL_METHODS if m.value == text), None)
