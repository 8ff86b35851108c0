"""Tables of the consent ledger. Rows are appended, never updated (C3): the current state
of a person's consent is derived from their events, latest first.

Both tables lead their primary key with `household_id` and name the profile they are
about, so a profile's erasure removes them with the rest of its rows (C1, C6).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKeyConstraint, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from tutela.core.types import Binary, UTCDateTime
from tutela.db.base import Base


class Channel(StrEnum):
    """Where a consent event came from."""

    CONSOLE = "console"
    API = "api"
    DEVICE = "device"
    SYSTEM = "system"


class Method(StrEnum):
    """How the person said it. The last four verify that a child's guardian consents (C3)."""

    CHECKBOX = "checkbox"
    REFUSAL = "refusal"
    SIGNED_FORM = "signed_form"
    CARD_CHECK = "card_check"
    KNOWLEDGE_QUESTIONS = "knowledge_questions"
    ID_CHECK = "id_check"


PARENTAL_METHODS = (
    Method.SIGNED_FORM,
    Method.CARD_CHECK,
    Method.KNOWLEDGE_QUESTIONS,
    Method.ID_CHECK,
)


class ConsentEvent(Base):
    """One grant or withdrawal of one purpose for one profile, as it was given."""

    __tablename__ = "consent_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        # The one question (`allows`) reads the latest event of a (profile, purpose)
        # no later than a time: one index range, read backwards. On PostgreSQL the index
        # also holds what a decision needs, so checks and bulk checks read no table pages.
        Index(
            "ix_consent_events_subject",
            "household_id",
            "profile_id",
            "purpose",
            "at",
            "id",
            postgresql_include=["granted", "notice_version"],
        ),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    purpose: Mapped[str] = mapped_column(String(40))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    """`account:<id>` (the person, or a child's guardian), `device:<id>`, `system`."""
    channel: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(24))
    notice_version: Mapped[int] = mapped_column(Integer)
    """The version of the consent notice the person was shown."""
    parental_consent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """For a child: the verification of the guardian this grant rests on (C3)."""


class ParentalConsent(Base):
    """A guardian's verified consent for a child (C3): the method and its evidence.

    The evidence is sealed under the child's profile key, so it dies with the profile.
    A government ID image is never evidence: it is erased right after the check, and
    the evidence holds that erasure's request id instead (C3).
    """

    __tablename__ = "parental_consents"
    __table_args__ = (
        ForeignKeyConstraint(
            ["household_id", "child_profile_id"], ["profiles.household_id", "profiles.id"]
        ),
        ForeignKeyConstraint(
            ["household_id", "guardian_account_id"], ["accounts.household_id", "accounts.id"]
        ),
        Index("ix_parental_consents_child", "household_id", "child_profile_id", "at"),
    )

    household_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    child_profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    guardian_account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    method: Mapped[str] = mapped_column(String(24))
    verified: Mapped[bool] = mapped_column(Boolean)
    """False for an attempt that failed: kept, so repeated failures can be seen."""
    notice_version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    evidence_sealed: Mapped[bytes | None] = mapped_column(Binary)


class ConsentChecker(Base):
    """A process that answers consent checks from a cache (PostgreSQL): its lease, and
    the last withdrawal it has acknowledged. A withdrawal returns once every checker
    whose lease is live has acknowledged it (C6; `consent/freshness.py`)."""

    __tablename__ = "consent_checkers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    acked: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsentClock(Base):
    """One row (SQLite): a fresh value written by a trigger whenever consent events are
    appended or deleted; a checker reads it before each answer from its cache (C6)."""

    __tablename__ = "consent_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stamp: Mapped[int] = mapped_column(BigInteger)
