"""Employees of the operator: who they are, their roles, and how they are added (R4).

Every employee must enrol a second factor at their first sign-in; an employee whose role
can reach customer media must enrol WebAuthn (phishing-resistant, NIST SP 800-63B AAL3
direction), and cannot sign in with TOTP or recovery codes alone.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, InvalidInput
from tutela.core.ids import uuid7
from tutela.households import rules as household_rules
from tutela.identity.models import StaffMember
from tutela.identity.owners import STAFF_KEY, staff_email_aad
from tutela.identity.passwords import PasswordHasher
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

STAFF_INDEX_KEY = "staff-email-index"
# The password `tutela staff add` prints is good for this long; its holder must enrol a
# second factor in that time, after which the password alone opens nothing.
ENROLMENT_WINDOW = timedelta(hours=72)


class StaffRole(StrEnum):
    SUPPORT = "support"
    REVIEWER = "reviewer"
    PRIVACY_OFFICER = "privacy_officer"
    AUDITOR = "auditor"
    SECURITY = "security"
    ADMIN = "admin"


# Roles with a path to customer content: WebAuthn is required (R4).
MEDIA_ROLES = frozenset({StaffRole.REVIEWER, StaffRole.PRIVACY_OFFICER, StaffRole.ADMIN})


def needs_webauthn(roles: frozenset[str] | set[str]) -> bool:
    return bool(MEDIA_ROLES & set(roles))


@dataclass(frozen=True)
class AddedStaff:
    staff_id: uuid.UUID
    initial_password: str
    expires_at: datetime


def staff_index(keys: KeyStore, email: str, *, now: datetime) -> bytes:
    key = keys.service_key(STAFF_INDEX_KEY, now=now)
    return crypto.keyed_digest(key, household_rules.normalise_email(email).encode())


def find_staff(
    session: Session, keys: KeyStore, *, email: str, now: datetime
) -> StaffMember | None:
    return session.scalar(
        select(StaffMember).where(StaffMember.email_index == staff_index(keys, email, now=now))
    )


def check_roles(roles: list[str]) -> list[str]:
    known = {r.value for r in StaffRole}
    unknown = [r for r in roles if r not in known]
    if unknown or not roles:
        raise InvalidInput(f"Roles must be among: {', '.join(sorted(known))}.", code="unknown_role")
    return sorted(set(roles))


def add_staff(
    session: Session,
    keys: KeyStore,
    hasher: PasswordHasher,
    *,
    email: str,
    roles: list[str],
    now: datetime,
) -> AddedStaff:
    """Add an employee with a random initial password, returned once (the caller shows it).

    The first sign-in opens only an enrolment session: a second factor (WebAuthn for media
    roles) must be added before anything else (R4).
    """
    address = household_rules.check_email(email)
    chosen = check_roles(roles)
    index = staff_index(keys, address, now=now)
    if session.scalar(select(StaffMember.id).where(StaffMember.email_index == index)):
        raise Conflict("An employee with this email exists.", code="staff_exists")
    staff_id = uuid7()
    password = secrets.token_urlsafe(18)
    session.add(
        StaffMember(
            id=staff_id,
            email_index=index,
            email_sealed=crypto.seal(
                keys.service_key(STAFF_KEY, now=now),
                address.encode(),
                aad=staff_email_aad(staff_id),
            ),
            roles=" ".join(chosen),
            password_hash=hasher.hash(password),
            password_updated_at=now,
            password_must_change=True,
            created_at=now,
            disabled_at=None,
        )
    )
    record(session, tag=AuditTag.STAFF_ADDED, actor="system", now=now, subject=f"staff:{staff_id}")
    session.commit()
    return AddedStaff(
        staff_id=staff_id, initial_password=password, expires_at=now + ENROLMENT_WINDOW
    )
