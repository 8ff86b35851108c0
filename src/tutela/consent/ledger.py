"""The consent ledger: the one place any part of Tutela learns whether it may use a
person's data for a purpose (C2-C7, C11, A4, R2).

`allows(subject, purpose, at)` is the question; `allows_many` asks it for many subjects
at once (the training gate's form). The answer is derived from the appended events,
latest first, every time: nothing is updated in place and a withdrawal counts from the
next question on, in every process (C6).

The rules, in order:
- a child has no defaults: without a grant that rests on a guardian's verified consent,
  the answer is no (C3);
- a withdrawal is final until a new grant;
- a grant given under a notice older than the purpose's last material change no longer
  counts: the person is asked again (C3);
- an adult who has said nothing gets the purpose's `adult_default`, which is off for
  review, training and disclosure (C4).

Fast and fresh (C6): a checker's answers come from a per-process cache of latest events
(`consent/freshness.py`) that a withdrawal invalidates in every process before the
withdrawing transaction's commit returns (`consent/withdrawals.py`); `allows_many`
reads the store in a few statements, the rules folded in SQL (`consent/bulk.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from tutela.consent import bulk, withdrawals
from tutela.consent.freshness import Latest, LatestCache
from tutela.consent.models import Channel, ConsentEvent, Method, ParentalConsent
from tutela.consent.purposes import Catalogue, Purpose
from tutela.core.errors import Conflict, Forbidden, InvalidInput
from tutela.core.ids import uuid7
from tutela.households.models import Profile, ProfileKind

OpenSession = Callable[[], Session]


class Reason(StrEnum):
    GRANTED = "granted"
    DEFAULT_ON = "default_on"
    NOT_GRANTED = "not_granted"
    WITHDRAWN = "withdrawn"
    FRESH_CONSENT_NEEDED = "fresh_consent_needed"
    PARENTAL_CONSENT_REQUIRED = "parental_consent_required"


@dataclass(frozen=True)
class Subject:
    """Whose consent: a profile of a household, and whether it is a child's."""

    household_id: uuid.UUID
    profile_id: uuid.UUID
    kind: str

    @classmethod
    def of(cls, profile: Profile) -> Subject:
        return cls(profile.household_id, profile.id, profile.kind)

    @property
    def is_child(self) -> bool:
        return self.kind == ProfileKind.CHILD


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    since: datetime | None = None
    """When the deciding event was appended (None: a default)."""
    notice_version: int | None = None


def derive(subject_is_child: bool, purpose: Purpose, latest: Latest | None) -> Decision:
    """The decision the rules give for the latest event (pure: tested on its own)."""
    if latest is None:
        if subject_is_child:
            return Decision(False, Reason.PARENTAL_CONSENT_REQUIRED)
        if purpose.adult_default:
            return Decision(True, Reason.DEFAULT_ON)
        return Decision(False, Reason.NOT_GRANTED)
    if not latest.granted:
        return Decision(False, Reason.WITHDRAWN, latest.at, latest.notice_version)
    if latest.notice_version < purpose.changed_in:
        return Decision(False, Reason.FRESH_CONSENT_NEEDED, latest.at, latest.notice_version)
    return Decision(True, Reason.GRANTED, latest.at, latest.notice_version)


_t = ConsentEvent.__table__
_LATEST = (
    select(_t.c.granted, _t.c.notice_version, _t.c.at)
    .where(
        _t.c.household_id == bindparam("hh"),
        _t.c.profile_id == bindparam("pid"),
        _t.c.purpose == bindparam("purpose"),
        _t.c.at <= bindparam("at"),
    )
    .order_by(_t.c.at.desc(), _t.c.id.desc())
    .limit(1)
)


@dataclass(frozen=True)
class Change:
    """One appended event, as the caller asked for it."""

    purpose: str
    granted: bool


class ConsentLedger:
    """Appends consent events and answers the one question. Needs only the main store."""

    def __init__(
        self, open_session: OpenSession, catalogue: Catalogue, *, cache: LatestCache | None = None
    ) -> None:
        self.open_session = open_session
        self.catalogue = catalogue
        self.cache = cache
        """Answers checks without a session of the caller's (None: every check reads
        the store)."""

    # -- the question --

    def purpose(self, name: str) -> Purpose:
        try:
            return self.catalogue[name]
        except KeyError:
            raise InvalidInput("No such consent purpose.", code="unknown_purpose") from None

    def latest(
        self, session: Session, subject: Subject, purpose: str, at: datetime
    ) -> Latest | None:
        row = session.execute(
            _LATEST,
            {"hh": subject.household_id, "pid": subject.profile_id, "purpose": purpose, "at": at},
        ).first()
        return None if row is None else Latest(bool(row[0]), int(row[1]), row[2])

    def decide(
        self, subject: Subject, purpose: str, at: datetime, *, session: Session | None = None
    ) -> Decision:
        """Whether `purpose` is allowed for `subject` at `at`, and why.

        With `session` (a caller inside a transaction), the answer is the same: the
        cache's, which holds what is committed; only a session that has itself appended
        consent events reads through itself, to see them before they commit."""
        p = self.purpose(purpose)
        if self.cache is not None and (session is None or not withdrawals.wrote_consent(session)):
            found = self.cache.latest((subject.household_id, subject.profile_id), purpose, at)
            return derive(subject.is_child, p, found)
        if session is not None:
            return derive(subject.is_child, p, self.latest(session, subject, purpose, at))
        with self.open_session() as own:
            return derive(subject.is_child, p, self.latest(own, subject, purpose, at))

    def allows(
        self, subject: Subject, purpose: str, at: datetime, *, session: Session | None = None
    ) -> bool:
        return self.decide(subject, purpose, at, session=session).allowed

    def allows_many(
        self, subjects: Iterable[Subject], purposes: Iterable[str], at: datetime
    ) -> set[tuple[uuid.UUID, str]]:
        """The (profile id, purpose) pairs allowed at `at`, of every subject and purpose:
        the same answers as `allows` for each pair, read from the store at once."""
        wanted = [self.purpose(name) for name in dict.fromkeys(purposes)]
        unique = list({s.profile_id: s for s in subjects}.values())
        if not wanted or not unique:
            return set()
        with self.open_session() as session:
            return bulk.allowed_pairs(session, unique, wanted, at)

    def state(self, session: Session, subject: Subject, at: datetime) -> dict[str, Decision]:
        """Every purpose's decision for one subject: what a consent page shows."""
        return {
            name: derive(subject.is_child, p, self.latest(session, subject, name, at))
            for name, p in self.catalogue.purposes.items()
        }

    def history(self, session: Session, subject: Subject) -> list[ConsentEvent]:
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(
                    ConsentEvent.household_id == subject.household_id,
                    ConsentEvent.profile_id == subject.profile_id,
                )
                .order_by(ConsentEvent.at.desc(), ConsentEvent.id.desc())
            )
        )

    # -- appending --

    def verified_parental_consent(
        self, session: Session, subject: Subject, guardian_account_id: uuid.UUID | None = None
    ) -> ParentalConsent | None:
        """The latest verified consent of a guardian (any, or this one) for a child (C3)."""
        query = select(ParentalConsent).where(
            ParentalConsent.household_id == subject.household_id,
            ParentalConsent.child_profile_id == subject.profile_id,
            ParentalConsent.verified.is_(True),
        )
        if guardian_account_id is not None:
            query = query.where(ParentalConsent.guardian_account_id == guardian_account_id)
        return session.scalars(
            query.order_by(ParentalConsent.at.desc(), ParentalConsent.id.desc()).limit(1)
        ).first()

    def record(
        self,
        session: Session,
        subject: Subject,
        changes: Mapping[str, bool],
        *,
        actor: str,
        channel: Channel,
        method: Method,
        notice_version: int,
        now: datetime,
        guardian_account_id: uuid.UUID | None = None,
    ) -> list[Change]:
        """Append one event per purpose in `changes`; the caller commits (with its audit
        record). Nothing is appended if any change is refused.

        Grants are refused when given under a notice that is not the current one
        (`notice_changed`: the person saw an older text), when a separate purpose comes
        with another (`consent_bundled`, C4), and, for a child, without a guardian's
        verified consent (`parental_consent_required`, C3). Withdrawals are always taken,
        except under a version that was never published (`notice_changed` too).
        """
        if not changes:
            raise InvalidInput("Name at least one purpose.", code="no_purposes")
        for name in changes:
            self.purpose(name)
        grants = [name for name, granted in changes.items() if granted]
        current = self.catalogue.notice_version
        # A withdrawal under an older notice is taken (a page left open); no change is
        # ever recorded under a notice that was never published (false evidence, C3).
        if notice_version > current or (grants and notice_version != current):
            raise Conflict(
                "The consent notice has changed since it was shown; show the current one.",
                code="notice_changed",
                notice_version=self.catalogue.notice_version,
            )
        if len(grants) > 1 and any(self.catalogue[name].separate for name in grants):
            raise InvalidInput(
                "Consent to sharing with other companies is asked for on its own (C4).",
                code="consent_bundled",
            )
        parental: ParentalConsent | None = None
        if subject.is_child and grants:
            if guardian_account_id is None:
                raise Forbidden(
                    "Only a child's guardian can consent for them.", code="guardian_only"
                )
            parental = self.verified_parental_consent(session, subject, guardian_account_id)
            if parental is None:
                raise Forbidden(
                    "A guardian's consent must be verified before anything is collected "
                    "from a child (C3).",
                    code="parental_consent_required",
                )
        rows = [
            {
                "household_id": subject.household_id,
                "id": uuid7(),
                "profile_id": subject.profile_id,
                "purpose": name,
                "granted": granted,
                "at": now,
                "actor": actor,
                "channel": channel.value,
                "method": method.value,
                "notice_version": notice_version,
                "parental_consent_id": parental.id if parental is not None and granted else None,
            }
            for name, granted in changes.items()
        ]
        session.execute(insert(ConsentEvent), rows)
        withdrawals.appended(session, withdrawal=not all(changes.values()))
        return [Change(name, granted) for name, granted in changes.items()]

    def refuse_all(
        self,
        session: Session,
        subject: Subject,
        *,
        actor: str,
        channel: Channel,
        now: datetime,
    ) -> list[Change]:
        """Withdraw every purpose at once: "refuse further collection or use" (C6)."""
        return self.record(
            session,
            subject,
            dict.fromkeys(self.catalogue.names, False),
            actor=actor,
            channel=channel,
            method=Method.REFUSAL,
            notice_version=self.catalogue.notice_version,
            now=now,
        )
