"""Who a sign-in belongs to: a customer account or an employee (the *owner* of factors,
sessions, challenges and notices).

Customer secrets (TOTP seeds, session details, notice parameters) are sealed under the
account holder's profile key, so erasing the profile erases them (S6). An employee's are
sealed under the service key `staff`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.vault.keystore import KeyStore

STAFF_KEY = "staff"


@dataclass(frozen=True)
class Owner:
    kind: Literal["account", "staff"]
    id: uuid.UUID
    household_id: uuid.UUID | None = None
    profile_id: uuid.UUID | None = None

    @classmethod
    def account(
        cls, household_id: uuid.UUID, account_id: uuid.UUID, profile_id: uuid.UUID
    ) -> Owner:
        return cls("account", account_id, household_id, profile_id)

    @classmethod
    def staff(cls, staff_id: uuid.UUID) -> Owner:
        return cls("staff", staff_id)

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"

    @property
    def ref(self) -> str:
        """The actor/subject string audit events use: `account:<id>` or `staff:<id>`."""
        return f"{self.kind}:{self.id}"

    def columns(self) -> dict[str, uuid.UUID | None]:
        """Values of the owner columns for a new row."""
        if self.is_staff:
            return {"household_id": None, "account_id": None, "staff_id": self.id}
        return {"household_id": self.household_id, "account_id": self.id, "staff_id": None}

    def where(self, model: Any) -> ColumnElement[bool]:
        """A filter on `model`'s owner columns matching this owner."""
        if self.is_staff:
            clause: ColumnElement[bool] = model.staff_id == self.id
            return clause
        both: ColumnElement[bool] = (model.household_id == self.household_id) & (
            model.account_id == self.id
        )
        return both

    def sealing_key(self, keys: KeyStore, *, now: datetime) -> bytes:
        if self.is_staff:
            return keys.service_key(STAFF_KEY, now=now)
        assert self.household_id is not None and self.profile_id is not None
        return keys.profile_key(household_id=self.household_id, profile_id=self.profile_id)


def record_by(
    session: Session, owner: Owner, tag: AuditTag, *, now: datetime, subject: str | None = None
) -> None:
    """An audit event `owner` acted in, filed under its household (none for an employee)."""
    record(
        session, tag=tag, actor=owner.ref, now=now, household_id=owner.household_id, subject=subject
    )


def owner_of_row(session: Session, row: Any) -> Owner:
    """The owner a row with owner columns belongs to."""
    from tutela.households.models import Account  # noqa: PLC0415

    if row.staff_id is not None:
        return Owner.staff(row.staff_id)
    account = session.get(Account, (row.household_id, row.account_id))
    if account is None:
        raise LookupError("owner account is gone")
    return Owner.account(account.household_id, account.id, account.profile_id)


def email_of(session: Session, keys: KeyStore, owner: Owner, *, now: datetime) -> str:
    """The owner's email address, opened for delivering a notice."""
    from tutela.households import service as households  # noqa: PLC0415
    from tutela.households.models import Account  # noqa: PLC0415
    from tutela.identity.models import StaffMember  # noqa: PLC0415
    from tutela.vault import crypto  # noqa: PLC0415

    if owner.is_staff:
        member = session.get(StaffMember, owner.id)
        if member is None:
            raise LookupError("staff member is gone")
        return crypto.open_sealed(
            keys.service_key(STAFF_KEY, now=now), member.email_sealed, aad=staff_email_aad(owner.id)
        ).decode()
    account = session.get(Account, (owner.household_id, owner.id))
    if account is None:
        raise LookupError("account is gone")
    return households.account_email(keys, account)


def staff_email_aad(staff_id: uuid.UUID) -> bytes:
    return b"tutela:staff-email:" + staff_id.bytes
