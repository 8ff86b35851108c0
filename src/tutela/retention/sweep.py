"""The retention sweep: expired items, inactive children and unanswered consent contacts
(A1, A2, A3, A6, C5, C9).

Every deletion of personal data goes through the erasure engine and ends with a signed
receipt (A5, A8): the sweep only finds what is due and requests its erasure, one
request per profile and batch; the worker runs the requests. Only consent contacts,
which belong to no profile, are deleted here directly (C5).

Expired items are read in keyset-paginated batches, each in its own short transaction,
so no transaction holds locks for long. On PostgreSQL a session advisory lock makes
the sweep run in one process at a time; the inactive-child outcomes are moreover
changed only from `pending`, so a guardian's keep and a sweep's erasure never both win.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased

from tutela.audit.service import AuditTag, record
from tutela.core.clock import as_utc
from tutela.core.errors import Conflict, TutelaError
from tutela.db.engine import keyset_after, purge_journal
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households import service as households
from tutela.households.models import Account, Guardianship, Profile, ProfileKind, ProfileState
from tutela.identity.owners import Owner
from tutela.notices.service import NoticeKind, enqueue
from tutela.retention.models import AutoDeleteChoice, ConsentContact, InactiveChild
from tutela.retention.policy import Policy
from tutela.retention.service import (
    ERASING,
    KEPT,
    OPEN_OUTCOMES,
    PENDING,
    REACTIVATED,
    shortening_choices,
)
from tutela.vault.models import ItemKind, ItemState, MediaItem

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tutela.container import Container

A2_LIMIT = timedelta(days=90)
"""A2: an inactive child's data is deleted within 90 days of identification."""
log = logging.getLogger("tutela.retention")
ACTOR = "rule:retention"
INACTIVE_REF = "rule:inactive-child"
# One PostgreSQL advisory lock id for "a retention sweep is running" (signed 64 bits).
_LOCK_ID = int.from_bytes(
    hashlib.sha256(b"tutela:retention-sweep").digest()[:8], "big", signed=True
)


@dataclass
class SweepReport:
    """What one sweep found and did; a dry run finds the same and does nothing."""

    dry_run: bool
    expired_items: int = 0
    """Items past their effective maximum age found this run (A6, C9)."""
    requests: list[uuid.UUID] = field(default_factory=list)
    """Erasure requests made (empty on a dry run)."""
    held: int = 0
    """Expired items skipped because a legal hold covers them."""
    inactive_identified: int = 0
    """Child profiles newly identified as inactive (A1)."""
    inactive_notified: int = 0
    """Notices queued to their guardians, one per guardian (A2)."""
    inactive_reactivated: int = 0
    """Identified profiles used again before their erasure (A2)."""
    inactive_erasing: int = 0
    """Inactive profiles whose erasure was requested (A2)."""
    inactive_held: int = 0
    """Inactive profiles due for erasure that a legal hold keeps for now."""
    consent_contacts_expired: int = 0
    """Contacts kept only to ask for consent that got none in time, deleted (C5)."""
    skipped: bool = False
    """Another process was sweeping (PostgreSQL); this run did nothing."""

    def lines(self) -> list[str]:
        """The report as lines for an operator."""
        was, were = ("would be", "would be") if self.dry_run else ("was", "were")
        if self.skipped:
            return ["another retention sweep is running; nothing done"]
        return [
            ("dry run: nothing changed, nothing sent" if self.dry_run else "retention sweep"),
            f"expired items: {self.expired_items} ({self.held} under a legal hold)",
            f"erasure requests: {len(self.requests)}",
            f"inactive children identified: {self.inactive_identified} "
            f"(guardian notices: {self.inactive_notified})",
            f"inactive children used again: {self.inactive_reactivated}",
            f"inactive children whose erasure {was} requested: {self.inactive_erasing} "
            f"({self.inactive_held} under a legal hold)",
            f"consent contacts that {were} deleted: {self.consent_contacts_expired}",
        ]


# --- the sweep -------------------------------------------------------------------------


def run_sweep(
    container: Container,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> SweepReport:
    """Find what retention says must go and request its erasure (A1-A3, A6, C5, C9).

    Does not wait for the erasures: the worker (`container.erasure_pass()`) runs them.
    `max_batches` bounds the batches of expired items read this run; the rest waits
    for the next sweep. With `dry_run` everything is counted and nothing is changed,
    requested or sent.
    """
    at = as_utc(now) if now is not None else container.clock.now()
    size = batch_size or container.settings.retention_batch_size
    report = SweepReport(dry_run=dry_run)
    with _single_sweep(container.stores.main, wanted=not dry_run) as running:
        if not running:
            report.skipped = True
            return report
        sweep = _Sweep(container, container.policy, report, at, size, dry_run)
        sweep.expire_items(max_batches)
        sweep.inactive_children()
        sweep.consent_contacts()
        if not dry_run:
            with container.stores.session() as session:
                record(
                    session,
                    tag=AuditTag.RETENTION_SWEPT,
                    actor=ACTOR,
                    now=at,
                    subject=(
                        f"sweep:items={report.expired_items},requests={len(report.requests)},"
                        f"inactive={report.inactive_identified}/{report.inactive_erasing},"
                        f"contacts={report.consent_contacts_expired}"
                    )[:80],
                )
                session.commit()
    return report


_last_sweep: dict[int, datetime] = {}


def scheduled_sweep(container: Container) -> int:
    """Run the sweep when `retention_sweep_minutes` have passed since this process's last
    one for this container (the first call runs); returns the erasures it requested."""
    now = container.clock.now()
    key = id(container)
    last = _last_sweep.get(key)
    if last is not None and now - last < timedelta(
        minutes=container.settings.retention_sweep_minutes
    ):
        return 0
    if last is None:
        # Forget the container when it goes, so a new one at the same id starts afresh.
        weakref.finalize(container, _last_sweep.pop, key, None)
    # Remembered before running: a sweep that fails waits for the next slot, not 5 s.
    _last_sweep[key] = now
    return len(run_sweep(container, now=now).requests)


@contextmanager
def _single_sweep(engine: Engine, *, wanted: bool) -> Iterator[bool]:
    """One sweep at a time across processes (a PostgreSQL session advisory lock).

    SQLite serves one process (embedded mode), so there it always runs.
    """
    if not wanted or engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": _LOCK_ID}))
        conn.commit()  # the lock is the session's; no transaction stays open for it
        if not got:
            yield False
            return
        try:
            yield True
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                conn.commit()
            except Exception:
                # A connection that may still hold the lock must not go back to the pool.
                conn.invalidate()
                raise


def _expired(
    policy: Policy,
    subject: ProfileKind,
    kind: ItemKind,
    item: Any,
    choice: Any,
    now: datetime,
) -> ColumnElement[bool]:
    """`item` (of `kind`, about a `subject`) is past its effective maximum age (A6, C9).

    `choice` is the outer-joined AutoDeleteChoice of the item's profile and kind; a
    choice only ever shortens the policy's age (see `effective_max_age`).
    """
    chosen = func.coalesce(choice.choice, "")
    shorter = shortening_choices(policy, subject, kind)
    by_rule = item.captured_at < now - policy.max_age(kind, subject)
    branches = [and_(chosen.not_in(list(shorter)), by_rule) if shorter else by_rule]
    branches += [
        and_(chosen == name, item.captured_at < now - age) for name, age in shorter.items()
    ]
    return or_(*branches)


class _Sweep:
    def __init__(
        self,
        container: Container,
        policy: Policy,
        report: SweepReport,
        now: datetime,
        batch_size: int,
        dry_run: bool,
    ) -> None:
        self.container = container
        self.stores = container.stores
        self.policy = policy
        self.report = report
        self.now = now
        self.batch_size = batch_size
        self.dry_run = dry_run

    def _request(
        self,
        scope: Scope,
        requester: Requester,
        *,
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
    ) -> uuid.UUID | None:
        """Request an erasure; None when a legal hold (or a vanished subject) refuses it."""
        try:
            row = self.container.erasure.request(
                scope,
                requester,
                idempotency_key=idempotency_key,
                hold=self.container.hold,
                deadline=deadline,
            )
        except Conflict as exc:
            if exc.code != "legal_hold":
                raise
            return None
        except TutelaError as exc:
            # The profile was erased meanwhile: nothing of it is left to expire.
            log.info("retention erasure not requested: %s", exc.code)
            return None
        return row.id

    # -- expired items (A6, C9) --

    def expire_items(self, max_batches: int | None) -> None:
        batches = 0
        for subject in ProfileKind:
            for kind in ItemKind:
                cursor: tuple[uuid.UUID, uuid.UUID] | None = None
                while max_batches is None or batches < max_batches:
                    rows = self._expired_batch(subject, kind, cursor)
                    if not rows:
                        break
                    batches += 1
                    cursor = (rows[-1].household_id, rows[-1].id)
                    self._request_batch(subject, kind, rows)
                    if len(rows) < self.batch_size:
                        break

    def _expired_batch(
        self, subject: ProfileKind, kind: ItemKind, cursor: tuple[uuid.UUID, uuid.UUID] | None
    ) -> list[Any]:
        """The next batch of active items of `kind` about a `subject` past their age.

        A derived artifact (a transcript, a thumbnail) whose source is expired too goes
        with its source (the engine erases derived artifacts with their items), so it is
        selected here only when its own age runs out first.
        """
        item, source = MediaItem, aliased(MediaItem)
        choice, source_choice = aliased(AutoDeleteChoice), aliased(AutoDeleteChoice)
        source_expired = or_(
            *(
                and_(
                    source.kind == k.value,
                    _expired(self.policy, subject, k, source, source_choice, self.now),
                )
                for k in ItemKind
            )
        )
        query = (
            select(item.household_id, item.id, item.profile_id, choice.choice)
            .join(
                Profile,
                and_(Profile.household_id == item.household_id, Profile.id == item.profile_id),
            )
            .outerjoin(
                choice,
                and_(
                    choice.household_id == item.household_id,
                    choice.profile_id == item.profile_id,
                    choice.kind == item.kind,
                ),
            )
            .outerjoin(
                source,
                and_(source.household_id == item.household_id, source.id == item.source_item_id),
            )
            .outerjoin(
                source_choice,
                and_(
                    source_choice.household_id == source.household_id,
                    source_choice.profile_id == source.profile_id,
                    source_choice.kind == source.kind,
                ),
            )
            .where(
                item.kind == kind.value,
                item.state == ItemState.ACTIVE,
                Profile.kind == subject.value,
                Profile.state == ProfileState.ACTIVE,
                _expired(self.policy, subject, kind, item, choice, self.now),
                or_(
                    source.id.is_(None),
                    source.state != ItemState.ACTIVE,
                    not_(source_expired),
                ),
            )
            .order_by(item.household_id, item.id)
            .limit(self.batch_size)
        )
        if cursor is not None:
            query = query.where(keyset_after(item.household_id, item.id, cursor))
        with self.stores.session() as session:
            return list(session.execute(query).all())

    def _request_batch(self, subject: ProfileKind, kind: ItemKind, rows: list[Any]) -> None:
        """One erasure per (household, profile) of the batch, unless a legal hold covers it."""
        self.report.expired_items += len(rows)
        groups: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = {}
        choices: dict[tuple[uuid.UUID, uuid.UUID], str | None] = {}
        for row in rows:
            groups.setdefault((row.household_id, row.profile_id), []).append(row.id)
            choices[(row.household_id, row.profile_id)] = row.choice
        shorter = shortening_choices(self.policy, subject, kind)
        for (household_id, profile_id), ids in groups.items():
            if self.policy.hold_for(household_id, profile_id, self.now) is not None:
                self.report.held += len(ids)
                continue
            if self.dry_run:
                continue
            choice = choices[(household_id, profile_id)]
            requester = (
                Requester(RequesterKind.AUTO_DELETE, f"choice:{kind.value}")
                if choice in shorter
                else Requester(RequesterKind.RETENTION, f"rule:{kind.value}/{subject.value}")
            )
            scope = Scope(
                ScopeKind.ITEMS, household_id, profile_id=profile_id, item_ids=tuple(sorted(ids))
            )
            request_id = self._request(scope, requester)
            if request_id is None:
                self.report.held += len(ids)
            elif request_id not in self.report.requests:
                self.report.requests.append(request_id)

    # -- inactive children (A1-A3) --

    def inactive_children(self) -> None:
        self._reactivated()
        self._erase_due()
        self._identify()

    def _reactivated(self) -> None:
        """Pending records whose profile was used since it was identified (A2)."""
        query = (
            select(
                InactiveChild.household_id, InactiveChild.profile_id, InactiveChild.identified_at
            )
            .join(
                Profile,
                and_(
                    Profile.household_id == InactiveChild.household_id,
                    Profile.id == InactiveChild.profile_id,
                ),
            )
            .where(
                InactiveChild.outcome == PENDING,
                Profile.last_active_at > InactiveChild.last_active_at,
            )
        )
        with self.stores.session() as session:
            rows = session.execute(query).all()
            for row in rows:
                if self.dry_run:
                    self.report.inactive_reactivated += 1
                    continue
                if self._decide(session, row, REACTIVATED):
                    record(
                        session,
                        tag=AuditTag.INACTIVE_CHILD_REACTIVATED,
                        actor=INACTIVE_REF,
                        now=self.now,
                        household_id=row.household_id,
                        subject=f"profile:{row.profile_id}",
                    )
                    session.commit()
                    self.report.inactive_reactivated += 1

    def _decide(self, session: Session, row: Any, outcome: str, **values: Any) -> bool:
        """Move a record from pending to `outcome`; False if something else decided first."""
        changed = session.execute(
            update(InactiveChild)
            .where(
                InactiveChild.household_id == row.household_id,
                InactiveChild.profile_id == row.profile_id,
                InactiveChild.identified_at == row.identified_at,
                InactiveChild.outcome == PENDING,
            )
            .values(outcome=outcome, decided_at=self.now, **values)
            .execution_options(synchronize_session=False)
        )
        if getattr(changed, "rowcount", 0) != 1:
            session.rollback()
            return False
        return True

    def _erase_due(self) -> None:
        """Request the erasure of inactive profiles whose grace period is over (A2).

        Never before `erase_after`, never for a profile used again meanwhile, and never
        before its guardians were told (`notified_at`). The record is claimed
        (pending → erasing) before the request, so a guardian's keep that comes later is
        refused, and one that came first stops the erasure.
        """
        query = (
            select(
                InactiveChild.household_id,
                InactiveChild.profile_id,
                InactiveChild.identified_at,
                InactiveChild.outcome,
            )
            .join(
                Profile,
                and_(
                    Profile.household_id == InactiveChild.household_id,
                    Profile.id == InactiveChild.profile_id,
                ),
            )
            .where(
                # Claimed but not requested (a crash between the two): requested again.
                or_(
                    InactiveChild.outcome == PENDING,
                    and_(InactiveChild.outcome == ERASING, InactiveChild.request_id.is_(None)),
                ),
                InactiveChild.erase_after <= self.now,
                InactiveChild.notified_at.is_not(None),
                Profile.state == ProfileState.ACTIVE,
                Profile.last_active_at <= InactiveChild.last_active_at,
            )
            .order_by(InactiveChild.erase_after)
        )
        with self.stores.session() as session:
            rows = session.execute(query).all()
        for row in rows:
            if self.policy.hold_for(row.household_id, row.profile_id, self.now) is not None:
                self.report.inactive_held += 1
                continue
            if self.dry_run:
                self.report.inactive_erasing += 1
                continue
            if row.outcome == PENDING:
                with self.stores.session() as session:
                    if not self._decide(session, row, ERASING):
                        continue
                    session.commit()
            request_id = self._request(
                Scope(ScopeKind.PROFILE, row.household_id, profile_id=row.profile_id),
                Requester(RequesterKind.INACTIVE_CHILD, INACTIVE_REF),
                # A2: erased within 90 days of identification, whatever the usual limit.
                deadline=as_utc(row.identified_at) + A2_LIMIT,
                idempotency_key=(
                    f"inactive-child:{row.household_id}:{row.profile_id}:"
                    f"{as_utc(row.identified_at).isoformat()}"
                ),
            )
            with self.stores.session() as session:
                key = InactiveChild.household_id == row.household_id
                where = and_(
                    key,
                    InactiveChild.profile_id == row.profile_id,
                    InactiveChild.identified_at == row.identified_at,
                )
                if request_id is None:
                    # A hold came into force meanwhile: back to pending, tried next sweep.
                    session.execute(
                        update(InactiveChild).where(where).values(outcome=PENDING, decided_at=None)
                    )
                    self.report.inactive_held += 1
                else:
                    session.execute(
                        update(InactiveChild).where(where).values(request_id=request_id)
                    )
                    self.report.inactive_erasing += 1
                    if request_id not in self.report.requests:
                        self.report.requests.append(request_id)
                session.commit()

    def _identify(self) -> None:
        """Child profiles unused for `inactive_child_after`: record, tell guardians (A1, A2).

        Not a profile already awaiting erasure or being erased, nor one a guardian kept
        within the last `inactive_child_after` (A3: a keep holds for one more period).
        """
        after = self.policy.inactive_child_after
        cutoff = self.now - after
        open_record = exists().where(
            InactiveChild.household_id == Profile.household_id,
            InactiveChild.profile_id == Profile.id,
            or_(
                InactiveChild.outcome.in_(OPEN_OUTCOMES),
                and_(InactiveChild.outcome == KEPT, InactiveChild.decided_at >= cutoff),
            ),
        )
        cursor: tuple[uuid.UUID, uuid.UUID] | None = None
        while True:
            query = (
                select(Profile.household_id, Profile.id)
                .where(
                    Profile.kind == ProfileKind.CHILD,
                    Profile.state == ProfileState.ACTIVE,
                    Profile.last_active_at < cutoff,
                    not_(open_record),
                )
                .order_by(Profile.household_id, Profile.id)
                .limit(self.batch_size)
            )
            if cursor is not None:
                query = query.where(keyset_after(Profile.household_id, Profile.id, cursor))
            with self.stores.session() as session:
                found = session.execute(query).all()
            for household_id, profile_id in found:
                self._identify_one(household_id, profile_id, open_record, cutoff)
            if len(found) < self.batch_size:
                return
            cursor = (found[-1].household_id, found[-1].id)

    def _identify_one(
        self,
        household_id: uuid.UUID,
        profile_id: uuid.UUID,
        open_record: ColumnElement[bool],
        cutoff: datetime,
    ) -> None:
        keys = self.container.vault.keys
        with self.stores.session() as session:
            # Checked again under the profile's row lock (PostgreSQL): two sweeps, or a
            # sweep and an upload, cannot both act on a stale read.
            query = select(Profile).where(
                Profile.household_id == household_id,
                Profile.id == profile_id,
                Profile.state == ProfileState.ACTIVE,
                Profile.last_active_at < cutoff,
                not_(open_record),
            )
            if session.get_bind().dialect.name == "postgresql" and not self.dry_run:
                query = query.with_for_update()
            profile = session.scalars(query).first()
            if profile is None:
                return
            guardians = session.scalars(
                select(Account)
                .join(
                    Guardianship,
                    and_(
                        Guardianship.household_id == Account.household_id,
                        Guardianship.guardian_account_id == Account.id,
                    ),
                )
                .where(
                    Guardianship.household_id == household_id,
                    Guardianship.child_profile_id == profile_id,
                )
            ).all()
            self.report.inactive_identified += 1
            if self.dry_run:
                self.report.inactive_notified += len(guardians)
                session.rollback()
                return
            erase_after = self.now + self.policy.inactive_child_grace
            name = households.profile_view(keys, profile).name
            for account in guardians:
                enqueue(
                    session,
                    keys,
                    kind=NoticeKind.INACTIVE_CHILD,
                    owner=Owner.account(account.household_id, account.id, account.profile_id),
                    params={
                        "at": self.now.isoformat(),
                        "profile": name,
                        "erase_on": erase_after.date().isoformat(),
                    },
                    now=self.now,
                    # It names the child: erased with the child's profile (A5).
                    about_profile_id=profile_id,
                )
            session.add(
                InactiveChild(
                    household_id=household_id,
                    profile_id=profile_id,
                    identified_at=self.now,
                    last_active_at=profile.last_active_at,
                    erase_after=erase_after,
                    # Nobody told, nobody erased: without a guardian the record waits.
                    notified_at=self.now if guardians else None,
                    outcome=PENDING,
                )
            )
            record(
                session,
                tag=AuditTag.INACTIVE_CHILD_IDENTIFIED,
                actor=INACTIVE_REF,
                now=self.now,
                household_id=household_id,
                subject=f"profile:{profile_id}",
            )
            session.commit()
            self.report.inactive_notified += len(guardians)
            if not guardians:
                log.warning("an inactive child profile has no guardian to tell")

    # -- consent contacts (C5) --

    def consent_contacts(self) -> None:
        """Delete contacts kept to ask for consent that got none within the limit (C5).

        They belong to no profile, so they are deleted here, in batches, and the SQLite
        journal is purged so the deleted rows leave the files too.
        """
        expired = and_(
            ConsentContact.consented_at.is_(None),
            ConsentContact.created_at < self.now - self.policy.consent_contact_max_age,
        )
        if self.dry_run:
            with self.stores.session() as session:
                count = session.scalar(
                    select(func.count()).select_from(ConsentContact).where(expired)
                )
            self.report.consent_contacts_expired += int(count or 0)
            return
        deleted = 0
        while True:
            with self.stores.session() as session:
                ids = list(
                    session.scalars(
                        select(ConsentContact.id)
                        .where(expired)
                        .order_by(ConsentContact.id)
                        .limit(self.batch_size)
                    )
                )
                if ids:
                    gone = session.execute(
                        delete(ConsentContact)
                        .where(ConsentContact.id.in_(ids), expired)
                        .execution_options(synchronize_session=False)
                    )
                    session.commit()
                    deleted += int(getattr(gone, "rowcount", 0) or 0)
            if len(ids) < self.batch_size:
                break
        self.report.consent_contacts_expired += deleted
        if deleted:
            purge_journal(self.stores.main)
