"""Knowledge-based questions of verifiable parental consent (C3; 16 CFR 312.5(b)(2)(vi)).

The Rule asks for dynamic, multiple-choice questions with enough possible answers that
a child in the household could not reasonably work them out. Production operators plug
in a provider whose questions come from records about the adult (credit, property,
address history); the packaged bank below stands in for it in tests and the demo, with
questions an adult, not a child, can answer about running a household.

A challenge is stateless: the ids of the questions drawn, the child and the guardian,
and an expiry, MACed under a service key. Answers are checked against it; the evidence
keeps the question ids and pass or fail, never the answers.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from tutela.core.errors import ConfigurationError, InvalidInput
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

QUESTIONS_KEY = "consent-questions"
CHALLENGE_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    choices: tuple[str, ...]
    answer: str


BANK: tuple[Question, ...] = (
    Question(
        "kbq-mortgage-term",
        "Which of these is a common length of a home mortgage in the United States?",
        ("3 months", "30 years", "300 years", "3 days"),
        "30 years",
    ),
    Question(
        "kbq-wage-statement",
        "Which form does an employer send each year showing wages and taxes withheld?",
        ("W-2", "A-1", "Form 9", "P-100"),
        "W-2",
    ),
    Question(
        "kbq-apr",
        "On a credit card statement, what does APR stand for?",
        (
            "Annual percentage rate",
            "Automatic payment receipt",
            "Account privacy rule",
            "Average purchase range",
        ),
        "Annual percentage rate",
    ),
    Question(
        "kbq-escrow",
        "What is an escrow account used for with a mortgage?",
        (
            "Paying property taxes and insurance",
            "Saving for holidays",
            "Buying groceries",
            "Paying a phone bill",
        ),
        "Paying property taxes and insurance",
    ),
    Question(
        "kbq-deductible",
        "On a health insurance plan, what is the deductible?",
        (
            "What you pay before the plan pays",
            "A discount on the premium",
            "The doctor's fee",
            "A tax refund",
        ),
        "What you pay before the plan pays",
    ),
    Question(
        "kbq-tax-return",
        "Which form do most people file for their yearly federal income tax return?",
        ("1040", "W-9", "I-9", "DS-11"),
        "1040",
    ),
)
_BY_ID = {q.id: q for q in BANK}


@dataclass(frozen=True)
class Drawn:
    challenge: str
    questions: tuple[Question, ...]
    expires_at: datetime


@dataclass(frozen=True)
class Answered:
    question_ids: tuple[str, ...]
    passed: bool
    right: int


def require_bank(*, production: bool) -> None:
    """The packaged bank is public: in production it verifies nobody (C3)."""
    if production:
        raise ConfigurationError(
            "No question provider is configured for knowledge questions.",
            code="question_bank_missing",
        )


def _mac(keys: KeyStore, payload: bytes, *, now: datetime) -> bytes:
    return crypto.keyed_digest(keys.service_key(QUESTIONS_KEY, now=now), payload)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def draw(
    keys: KeyStore,
    *,
    child_profile_id: uuid.UUID,
    account_id: uuid.UUID,
    count: int,
    now: datetime,
) -> Drawn:
    """`count` questions at random, with a challenge that binds them to this guardian,
    this child and the next 15 minutes."""
    chosen = tuple(secrets.SystemRandom().sample(BANK, min(count, len(BANK))))
    expires = now + CHALLENGE_TTL
    payload = json.dumps(
        {
            "c": str(child_profile_id),
            "a": str(account_id),
            "q": [q.id for q in chosen],
            "e": int(expires.timestamp()),
        },
        separators=(",", ":"),
    ).encode()
    token = _b64(payload) + "." + _b64(_mac(keys, payload, now=now))
    return Drawn(token, chosen, expires)


def check(
    keys: KeyStore,
    *,
    challenge: str,
    answers: dict[str, str],
    child_profile_id: uuid.UUID,
    account_id: uuid.UUID,
    now: datetime,
) -> Answered:
    """Every question of the challenge answered right, or not. A challenge that is not
    ours, for another child or guardian, or expired is refused as input (it was never a
    verification attempt); wrong answers are a failed attempt."""
    ids = _opened(keys, challenge, child_profile_id, account_id, now)
    right = sum(
        1
        for qid in ids
        if qid in _BY_ID
        and answers.get(qid, "").strip().casefold() == _BY_ID[qid].answer.casefold()
    )
    return Answered(ids, right == len(ids) and len(ids) > 0, right)


def reopen(
    keys: KeyStore,
    *,
    challenge: str,
    child_profile_id: uuid.UUID,
    account_id: uuid.UUID,
    now: datetime,
) -> Drawn:
    """The questions of a challenge drawn earlier, to show them again (a form sent back
    for another reason than its answers); refused as `check` refuses it."""
    ids = _opened(keys, challenge, child_profile_id, account_id, now)
    head = _unb64(challenge.split(".", 1)[0])
    expires = datetime.fromtimestamp(json.loads(head)["e"], tz=now.tzinfo)
    return Drawn(challenge, tuple(_BY_ID[i] for i in ids if i in _BY_ID), expires)


def _opened(
    keys: KeyStore,
    challenge: str,
    child_profile_id: uuid.UUID,
    account_id: uuid.UUID,
    now: datetime,
) -> tuple[str, ...]:
    try:
        head, mac = challenge.split(".", 1)
        payload = _unb64(head)
        good = hmac.compare_digest(_unb64(mac), _mac(keys, payload, now=now))
        data = json.loads(payload) if good else None
    except (ValueError, TypeError):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("c") != str(child_profile_id)
        or data.get("a") != str(account_id)
        or not isinstance(data.get("q"), list)
        or not isinstance(data.get("e"), int)
    ):
        raise InvalidInput("That question set is not valid.", code="questions_invalid")
    if now.timestamp() > data["e"]:
        raise InvalidInput(
            "Those questions have expired; ask for new ones.", code="questions_expired"
        )
    return tuple(str(i) for i in data["q"])
