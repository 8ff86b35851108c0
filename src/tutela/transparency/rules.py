"""Pure rules of access transparency: the closed list of purposes and conditions, the
pseudonym customers see for an employee, and what a record must carry (R2, R3, R9)."""

from __future__ import annotations

import re
import uuid
from enum import StrEnum

from tutela.core.errors import InvalidInput
from tutela.vault import crypto

PSEUDONYM_KEY = "staff-pseudonym"
# Four hex digits: short enough to read out on a call, and within one household two
# employees share one with a chance of 1 in 65,536.
PSEUDONYM_HEX = 4
TICKET_MAX = 64
POLICY_ID_MAX = 128
_TICKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]*$")


class AccessPurpose(StrEnum):
    """Why an employee may look at a customer's media: a closed list (R2, R3)."""

    SUPPORT_TICKET = "support_ticket"
    LEGAL_PROCESS = "legal_process"
    SAFETY_REVIEW = "safety_review"
    BREAK_GLASS = "break_glass"
    CONSENTED_REVIEW = "consented_review"


class Condition(StrEnum):
    """What must hold before a purpose opens anything (R2); every purpose needs one."""

    TICKET = "ticket"
    HUMAN_REVIEW_CONSENT = "human_review_consent"
    LEGAL_PROCESS = "legal_process"
    AFTER_REVIEW = "after_review"


# What the policy file may not weaken (R2): human review rests on the customer's consent,
# a support look on a ticket, a legal look on legal process and its reference, and a
# break-glass look is reviewed after the fact.
REQUIRED_CONDITIONS: dict[AccessPurpose, frozenset[Condition]] = {
    AccessPurpose.CONSENTED_REVIEW: frozenset({Condition.HUMAN_REVIEW_CONSENT}),
    AccessPurpose.SUPPORT_TICKET: frozenset({Condition.TICKET}),
    AccessPurpose.LEGAL_PROCESS: frozenset({Condition.LEGAL_PROCESS, Condition.TICKET}),
    AccessPurpose.SAFETY_REVIEW: frozenset({Condition.TICKET}),
    AccessPurpose.BREAK_GLASS: frozenset({Condition.AFTER_REVIEW}),
}


class Target(StrEnum):
    """What was looked at: one item, or the profile's list of items."""

    ITEM = "item"
    PROFILE = "profile"


def pseudonym(key: bytes, *, household_id: uuid.UUID, staff_id: uuid.UUID) -> str:
    """The name a household sees for an employee: stable within the household, unlinkable
    across households, and meaningless without the operator's key (R9).

    HMAC-SHA-256 (RFC 2104) of the household and employee ids, first four hex digits.
    The operator can find the employee again (it holds the key and the rows hold the
    employee's id); a customer, or two customers comparing notes, cannot.
    """
    digest = crypto.keyed_digest(key, household_id.bytes + staff_id.bytes)
    return digest.hex()[:PSEUDONYM_HEX]


def parse_purpose(value: str) -> AccessPurpose:
    try:
        return AccessPurpose(value)
    except ValueError:
        known = ", ".join(p.value for p in AccessPurpose)
        raise InvalidInput(
            f"The purpose must be one of {known}.", code="unknown_access_purpose"
        ) from None


def check_ticket(ticket: str | None) -> str | None:
    """A ticket reference as stored: trimmed, at most 64 characters, no spaces or markup."""
    if ticket is None:
        return None
    ticket = ticket.strip()
    if not ticket:
        return None
    if len(ticket) > TICKET_MAX or not _TICKET.match(ticket):
        raise InvalidInput(
            f"A ticket reference is up to {TICKET_MAX} letters, digits and . _ : / # -.",
            code="invalid_ticket",
        )
    return ticket


def check_policy_id(policy_id: str) -> str:
    policy_id = policy_id.strip()
    if not policy_id or len(policy_id) > POLICY_ID_MAX:
        raise InvalidInput(
            f"A decision's policy id is 1 to {POLICY_ID_MAX} characters.",
            code="invalid_policy_id",
        )
    return policy_id
