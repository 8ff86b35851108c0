"""The retention sweep: expired items, ephemeral voice, inactive children and unanswered
consent contacts (A1, A2, A3, A6, C5, C9, C11).

Every deletion of personal data goes through the erasure engine and ends with a signed
receipt (A5, A8): the sweep only finds what is due and requests its erasure in batches
(`ErasureEngine.request_batch`, one call per batch and kind of requester, across
households and profiles); the worker runs the requests. Only consent contacts, which
belong to no profile, are deleted here directly (C5).

Expired items are found through indexes and read in keyset-paginated batches, each in
its own short transaction, so no transaction holds locks for long (`expire_items`;
docs/erasure.md shows the plans). On PostgreSQL a session advisory lock makes
the sweep run in one process at a time; the inactive-child outcomes are moreover
changed only from `pending`, so a guardian's keep and a sweep's erasure never both win.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from tutela.audit.service import AuditTag, record
from tutela.core.clock import as_utc
from tutela.core.errors import Conflict, TutelaError
from tutela.db.engine import explain, keyset_after, pairs_in, purge_journal
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Member, Requester, Scope
from tutela.households import service as households
from tutela.households.models import Account, Guardianship, Profile, ProfileKind, ProfileState
from tutela.identity.owners import Owner
from tutela.notices.service import NoticeKind, enqueue
from tutela.retention import ephemeral
from tutela.retention.models import AutoDeleteChoice, ConsentContact, InactiveChild
from tutela.retention.policy import AUTO_DELETE_CHOICES, Policy
from tutela.retention.service import (
    ERASING,
    KEPT,
    OPEN_OUTCOMES,
    PENDING,
    REACTIVATED,
    decided_by_choice,
    effective_max_age,
)
from tutela.vault.models import ItemKind, ItemState, MediaItem

if TYPE_CHECKING:
    from sqlalchemy import Connection, Dialect, Engine

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
    ephemeral_expired: int = 0
    """Ephemeral voice rows and transcripts past their short age (C11; `ephemeral.py`)."""
    ephemeral_held: int = 0
    """Of those, the ones a legal hold keeps for now."""
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
            f"ephemeral voice past its age: {self.ephemeral_expired} "
            f"({self.ephemeral_held} under a legal hold)",
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
        _expire_ephemeral(container, report, at, size, dry_run, max_batches)
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
                        f"contacts={report.consent_contacts_expired},"
                        f"ephemeral={report.ephemeral_expired}"
                    )[:80],
                )
                session.commit()
    return report


def _expire_ephemeral(
    container: Container,
    report: SweepReport,
    now: datetime,
    batch_size: int,
    dry_run: bool,
    max_batches: int | None,
) -> None:
    """Ephemeral voice first (C11): its age is hours, so it is never left for a later run
    behind a backlog of other expired items."""
    found = ephemeral.expire_ephemeral(
        container,
        now=now,
        max_age=container.policy.ephemeral_voice_max_age,
        batch_size=batch_size,
        dry_run=dry_run,
        max_batches=max_batches,
    )
    report.ephemeral_expired += found.expired
    report.ephemeral_held += found.held
    for request_id in found.requests or ():
        if request_id not in report.requests:
            report.requests.append(request_id)


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
    with container.stores.session() as session:
        # Records of employees' looks are kept as long as the staff-access policy says (R3).
        container.transparency.prune(session, now=now)
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


RULE = Requester(RequesterKind.RETENTION, ACTOR)
"""Who asks for the erasure of items past their policy rule's age (A6, C9)."""
CHOICE = Requester(RequesterKind.AUTO_DELETE, "choice:auto-delete")
"""Who asks for the erasure of items whose customer's choice set a shorter age (A6)."""
_LOOKUP = 1000
"""Pairs per batch lookup (one bound value for all of them)."""
_SORTED_BATCHES, _SORTED_MOST = 100, 100_000
"""Found items are requested in key order, up to this many batches (or items) at a time."""


@dataclass(frozen=True)
class _Ages:
    """The policy's ages for one sweep: per (kind, subject, choice) the effective maximum
    age and whether the choice decided it (`effective_max_age`), and the cutoffs at `now`."""

    policy: Policy
    now: datetime
    table: dict[tuple[str, str, str | None], tuple[datetime, bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for subject in ProfileKind:
            for kind in ItemKind:
                for choice in (None, *AUTO_DELETE_CHOICES):
                    age = effective_max_age(self.policy, subject, kind, choice)
                    by_choice = decided_by_choice(self.policy, subject, kind, choice)
                    self.table[(kind.value, subject.value, choice)] = (self.now - age, by_choice)

    def rule_cutoff(self, kind: str, subject: str) -> datetime:
        """Items of `kind` about a `subject` captured before this are past the rule."""
        return self.table[(kind, subject, None)][0]

    def of(self, kind: str, subject: str, choice: str | None) -> tuple[datetime, bool]:
        """(cutoff, decided by the choice); a stored choice unknown here counts as none."""
        found = self.table.get((kind, subject, choice))
        return found if found is not None else self.table[(kind, subject, None)]

    def shortening(self) -> list[str]:
        """The choices that shorten at least one rule."""
        return sorted({c for (_, _, c), (_, by) in self.table.items() if by and c is not None})


def _uuid_from_hex(value: str) -> uuid.UUID:
    """`uuid.UUID(hex=value)` for the 32 hex digits SQLAlchemy stores a UUID as on SQLite,
    in under half its time (it skips the checks of other spellings): a sweep makes three
    for each item it requests."""
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", int(value, 16))
    object.__setattr__(made, "is_safe", _UNKNOWN)
    return made


_UNKNOWN = uuid.SafeUUID.unknown


def _raw(column: Any) -> Any:
    """`column` as the driver gives it, without SQLAlchemy's processing of each value (on
    SQLite a UUID stays 32 hex digits and a time its text): a sweep reads 100,000s of
    rows and turns into objects only what it requests (`_Sweep.uuid`, `_Sweep.time`)."""
    return type_coerce(column, String()).label(column.key)


# The columns a selection reads of each candidate item.
_CANDIDATE = tuple(
    _raw(c)
    for c in (
        MediaItem.household_id,
        MediaItem.id,
        MediaItem.profile_id,
        MediaItem.source_item_id,
        MediaItem.kind,
        MediaItem.subject_class,
        MediaItem.captured_at,
    )
)


def rule_page(
    kind: str,
    subject: str,
    cutoff: datetime,
    cursor: tuple[datetime, uuid.UUID, uuid.UUID] | None,
    limit: int,
) -> Select[*tuple[Any, ...]]:
    """Active items of `kind` about a `subject` captured before `cutoff`, oldest first,
    after `cursor`: one range of `ix_items_retention`, keyset-paged on its last three
    columns with a row-value comparison (an index bound on both stores)."""
    query = (
        select(*_CANDIDATE)
        .where(
            MediaItem.kind == kind,
            MediaItem.subject_class == subject,
            MediaItem.captured_at < cutoff,
            MediaItem.state == ItemState.ACTIVE,
        )
        .order_by(MediaItem.captured_at, MediaItem.household_id, MediaItem.id)
        .limit(limit)
    )
    if cursor is not None:
        keys = tuple_(MediaItem.captured_at, MediaItem.household_id, MediaItem.id)
        query = query.where(keys > tuple_(*cursor))
    return query


def choice_page(
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    kind: str,
    since: datetime,
    before: datetime,
    cursor: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[*tuple[Any, ...]]:
    """Active items of one profile and kind captured in [since, before), oldest first,
    after `cursor`: one range of `ix_items_household_profile_captured`.

    The keyset is written as one lower bound on `captured_at` and an OR for its ties:
    with a row-value comparison on (captured_at, id), whose second column that index
    lacks, or with two lower bounds, SQLite's planner (which has no statistics: Tutela
    never runs ANALYZE) prefers `ix_items_household_captured` and filters the household's
    other profiles' items (`tests/integration/test_retention_selection.py` checks the
    plans).
    """
    query = (
        select(*_CANDIDATE)
        .where(
            MediaItem.household_id == household_id,
            MediaItem.profile_id == profile_id,
            MediaItem.captured_at >= (since if cursor is None else max(since, cursor[0])),
            MediaItem.captured_at < before,
            MediaItem.kind == kind,
            MediaItem.state == ItemState.ACTIVE,
        )
        .order_by(MediaItem.captured_at, MediaItem.id)
        .limit(limit)
    )
    if cursor is not None:
        at, last = cursor
        query = query.where(
            or_(MediaItem.captured_at > at, and_(MediaItem.captured_at == at, MediaItem.id > last))
        )
    return query


def choices_page(
    names: list[str], cursor: tuple[uuid.UUID, uuid.UUID, str] | None, limit: int
) -> Select[*tuple[Any, ...]]:
    """Auto-delete choices of active profiles that may shorten a rule, with the profile's
    kind, in primary-key order after `cursor`."""
    query = (
        select(
            AutoDeleteChoice.household_id,
            AutoDeleteChoice.profile_id,
            AutoDeleteChoice.kind,
            AutoDeleteChoice.choice,
            Profile.kind.label("subject"),
        )
        .join(
            Profile,
            and_(
                Profile.household_id == AutoDeleteChoice.household_id,
                Profile.id == AutoDeleteChoice.profile_id,
            ),
        )
        .where(AutoDeleteChoice.choice.in_(names), Profile.state == ProfileState.ACTIVE)
        .order_by(AutoDeleteChoice.household_id, AutoDeleteChoice.profile_id, AutoDeleteChoice.kind)
        .limit(limit)
    )
    if cursor is not None:
        keys = tuple_(
            AutoDeleteChoice.household_id, AutoDeleteChoice.profile_id, AutoDeleteChoice.kind
        )
        query = query.where(keys > tuple_(*cursor))
    return query


Pairs = Sequence[tuple[Any, Any]]
"""(household_id, id) pairs as the driver gives them (`_raw`)."""


def owners_of(pairs: Pairs, dialect: Dialect) -> Select[*tuple[Any, ...]]:
    """Kind and state of the named profiles, with each of their auto-delete choices (one
    row per choice, one with none for a profile without): primary-key searches of both
    tables, per profile of the batch."""
    return (
        select(
            _raw(Profile.household_id),
            _raw(Profile.id),
            Profile.kind,
            Profile.state,
            AutoDeleteChoice.kind.label("chosen_kind"),
            AutoDeleteChoice.choice,
        )
        .outerjoin(
            AutoDeleteChoice,
            and_(
                AutoDeleteChoice.household_id == Profile.household_id,
                AutoDeleteChoice.profile_id == Profile.id,
            ),
        )
        .where(pairs_in((Profile.household_id, Profile.id), pairs, dialect, raw=True))
    )


def items_of(pairs: Pairs, dialect: Dialect) -> Select[*tuple[Any, ...]]:
    """The named items (primary-key searches): the sources of derived candidates."""
    return select(
        _raw(MediaItem.household_id),
        _raw(MediaItem.id),
        _raw(MediaItem.profile_id),
        MediaItem.kind,
        _raw(MediaItem.captured_at),
    ).where(pairs_in((MediaItem.household_id, MediaItem.id), pairs, dialect, raw=True))


def _looked_up(
    session: Session,
    query: Callable[[Pairs, Dialect], Select[*tuple[Any, ...]]],
    pairs: set[tuple[Any, Any]],
) -> list[Any]:
    ordered, dialect = list(pairs), session.get_bind().dialect
    found: list[Any] = []
    for at in range(0, len(ordered), _LOOKUP):
        found += session.connection().execute(query(ordered[at : at + _LOOKUP], dialect)).all()
    return found


def explain_selection(
    conn: Connection,
    policy: Policy,
    now: datetime,
    *,
    batch_size: int = 1000,
    kind: ItemKind = ItemKind.VOICE,
) -> dict[str, list[str]]:
    """The store's plans for each statement of the expired-item selection, with values
    of a sweep at `now` for items of `kind` (a child's by rule, an adult's by a 3-month
    choice; cursors in mid-walk, `batch_size` made-up pairs per lookup): what `tutela
    retention explain` prints and docs/erasure.md shows. None should read `items` whole."""
    ages = _Ages(policy, now)
    child, adult = ProfileKind.CHILD.value, ProfileKind.ADULT.value
    cutoff = ages.rule_cutoff(kind.value, child)
    ids = [uuid.UUID(int=n * 7919 + 1) for n in range(2 * min(batch_size, _LOOKUP))]
    raw = _Sweep.raw_uuid(conn.dialect)
    pairs = [(raw(a), raw(b)) for a, b in zip(ids[::2], ids[1::2], strict=True)]
    since = ages.rule_cutoff(kind.value, adult)
    statements: dict[str, Executable] = {
        "rule_page": rule_page(
            kind.value, child, cutoff, (cutoff - timedelta(days=1), ids[0], ids[1]), batch_size
        ),
        "choices_page": choices_page(
            ages.shortening() or ["3m"], (ids[0], ids[1], kind.value), batch_size
        ),
        "choice_page": choice_page(
            ids[0],
            ids[1],
            kind.value,
            since,
            max(ages.of(kind.value, adult, "3m")[0], since + timedelta(days=2)),
            (since + timedelta(days=1), ids[2]),
            batch_size,
        ),
        "owners_of": owners_of(pairs, conn.dialect),
        "items_of": items_of(pairs, conn.dialect),
    }
    return {
        name: [_LONG_ARRAY.sub(_count_values, line) for line in explain(conn, statement)]
        for name, statement in statements.items()
    }


# An array literal of many values in PostgreSQL's plans: shown as its count.
_LONG_ARRAY = re.compile(r"'\{([^}]{80,})\}'")


def _count_values(found: re.Match[str]) -> str:
    return f"'{{{found.group(1).count(',') + 1} values}}'"


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
        self.ages = _Ages(policy, now)
        dialect = self.stores.main.dialect
        self.uuid, self.time = self.from_raw(dialect)
        raw = self.raw_uuid(dialect)
        # Households with a legal hold in force now: only their items need `hold_for`.
        self._held = {raw(h.household_id) for h in policy.active_holds(now)}
        self._to_request: dict[RequesterKind, list[Member]] = {
            RULE.kind: [],
            CHOICE.kind: [],
        }
        self._requested: set[uuid.UUID] = set()
        # Members wait, per kind of requester, until this many are found (or the end).
        self._held_back = max(batch_size, min(batch_size * _SORTED_BATCHES, _SORTED_MOST))
        self._left: int | None = None

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

    @staticmethod
    def from_raw(
        dialect: Dialect,
    ) -> tuple[Callable[[Any], uuid.UUID], Callable[[Any], datetime]]:
        """Turn a raw UUID and a raw time (`_raw`) into objects: on SQLite they are text
        (SQLAlchemy keeps times as naive UTC); psycopg gives objects already."""
        if dialect.name == "sqlite":
            return _uuid_from_hex, lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC)
        return (lambda v: v), (lambda v: v)

    @staticmethod
    def raw_uuid(dialect: Dialect) -> Callable[[uuid.UUID], Any]:
        """A UUID as the driver gives it back (`_raw`)."""
        return (lambda u: u.hex) if dialect.name == "sqlite" else (lambda u: u)

    def _add_request(self, request_id: uuid.UUID) -> None:
        if request_id not in self._requested:
            self._requested.add(request_id)
            self.report.requests.append(request_id)

    # -- expired items (A6, C9) --

    def expire_items(self, max_batches: int | None) -> None:
        """Find the active items past their effective maximum age and request their erasure
        in batches: one `request_batch` call per `batch_size` items and kind of requester,
        across households and profiles. Found items wait until 100 batches' worth are
        found (or the end) and are then requested in (household, profile, item) order.

        A choice only ever shortens the policy's age, so an item past its rule's age is
        expired whatever its profile's choice: those are read through `ix_items_retention`
        per (kind, subject class). Then each choice that shortens a rule gets one range of
        `ix_items_household_profile_captured`: its profile's items of that kind past the
        choice's age but within the rule's. Neither selection joins anything per row;
        each batch read is checked with one lookup per table over the batch (`_admit`).
        `max_batches` bounds the rows read to that many batches' worth.
        """
        self._left = None if max_batches is None else max_batches * self.batch_size
        self._expired_by_rule()
        self._expired_by_choice()
        for kind in self._to_request:
            self._send(kind)

    def _limit(self) -> int:
        """How many rows the next read may take (0: this run's reading is done)."""
        return self.batch_size if self._left is None else min(self.batch_size, self._left)

    def _read(self, count: int) -> None:
        if self._left is not None:
            self._left -= count

    def _expired_by_rule(self) -> None:
        for subject in ProfileKind:
            for kind in ItemKind:
                cutoff = self.ages.rule_cutoff(kind.value, subject.value)
                cursor: tuple[datetime, uuid.UUID, uuid.UUID] | None = None
                while (limit := self._limit()) > 0:
                    with self.stores.session() as session:
                        query = rule_page(kind.value, subject.value, cutoff, cursor, limit)
                        rows = list(session.connection().execute(query).all())
                        self._read(len(rows))
                        admitted = self._admit(session, rows, by_rule=True)
                    self._queue(admitted)
                    if len(rows) < limit:
                        break
                    last = rows[-1]
                    cursor = (
                        self.time(last.captured_at),
                        self.uuid(last.household_id),
                        self.uuid(last.id),
                    )

    def _expired_by_choice(self) -> None:
        names = self.ages.shortening()
        if not names:
            return
        pending: list[Any] = []
        cursor: tuple[uuid.UUID, uuid.UUID, str] | None = None
        while self._limit() > 0:
            # One session for a page of choices and their ranges; its read transaction
            # ends before each batch is checked and requested.
            with self.stores.session() as session:
                choices = list(session.execute(choices_page(names, cursor, self.batch_size)))
                for row in choices:
                    if self._limit() <= 0:
                        break
                    pending += self._chosen_items(session, row)
                    if len(pending) >= self.batch_size:
                        session.commit()
                        self._take(pending)
                        pending = []
            if len(choices) < self.batch_size:
                break
            cursor = (choices[-1].household_id, choices[-1].profile_id, choices[-1].kind)
        if pending:
            self._take(pending)

    def _chosen_items(self, session: Session, choice: Any) -> list[Any]:
        """The items one choice expires that the rule does not (yet)."""
        if (choice.kind, choice.subject, None) not in self.ages.table:
            return []  # a kind this Tutela does not know
        before, by_choice = self.ages.of(choice.kind, choice.subject, choice.choice)
        if not by_choice:
            return []
        since = self.ages.rule_cutoff(choice.kind, choice.subject)
        found: list[Any] = []
        cursor: tuple[datetime, uuid.UUID] | None = None
        while (limit := self._limit()) > 0:
            rows = list(
                session.connection()
                .execute(
                    choice_page(
                        choice.household_id,
                        choice.profile_id,
                        choice.kind,
                        since,
                        before,
                        cursor,
                        limit,
                    )
                )
                .all()
            )
            self._read(len(rows))
            found += rows
            if len(rows) < limit:
                break
            cursor = (self.time(rows[-1].captured_at), self.uuid(rows[-1].id))
        return found

    def _take(self, rows: list[Any]) -> None:
        with self.stores.session() as session:
            admitted = self._admit(session, rows, by_rule=False)
        self._queue(admitted)

    def _admit(
        self, session: Session, rows: list[Any], *, by_rule: bool
    ) -> list[tuple[RequesterKind, Member]]:
        """The candidates to request, with who requests each; counts found and held ones.

        One lookup per table over the whole batch, by primary key: the profiles (only
        active ones, and their kind decides the rule) with their choices, and the sources
        of derived artifacts. A candidate of a choice is checked again against the choice
        as read now (a choice changed since wins); one past its rule's age (`by_rule`) is
        expired whatever the choice. A derived artifact whose source is expired too goes
        with its source (the engine erases derived artifacts with their items), so it is
        taken here only when its own age runs out first. Expired items under a legal hold
        are counted and left for a later sweep. Values stay as the driver gives them
        (`_raw`) until a member is made.
        """
        if not rows:
            return []
        sourced = {(r[0], r[3]) for r in rows if r[3]}
        sources = (
            {(s.household_id, s.id): s for s in _looked_up(session, items_of, sourced)}
            if sourced
            else {}
        )
        owners = {(r[0], r[2]) for r in rows}
        owners.update((s.household_id, s.profile_id) for s in sources.values())
        # The kind of each active profile, and each profile's choices by kind.
        profiles: dict[tuple[Any, Any], str] = {}
        chosen: dict[tuple[Any, Any], dict[str, str]] = {}
        active = ProfileState.ACTIVE.value
        for household, profile_id, kind, state, chosen_kind, choice in _looked_up(
            session, owners_of, owners
        ):
            if state == active:
                profiles[(household, profile_id)] = kind
            if chosen_kind is not None:
                chosen.setdefault((household, profile_id), {})[chosen_kind] = choice
        made: dict[tuple[Any, Any], tuple[uuid.UUID, uuid.UUID] | None] = {}
        admitted: list[tuple[RequesterKind, Member]] = []
        ages, uuid_of = self.ages.table, self.uuid
        found = held = 0
        for household, item, profile_id, source_id, kind, subject, captured in rows:
            owner = (household, profile_id)
            profile_kind = profiles.get(owner)
            if profile_kind is None:
                continue  # gone, or under erasure
            choices = chosen.get(owner)
            choice = choices.get(kind) if choices else None
            cutoff, by_choice = (
                ages.get((kind, profile_kind, choice)) or ages[(kind, profile_kind, None)]
            )
            if profile_kind != subject:
                # Never expected: a profile keeps its kind. Its own kind decides.
                log.warning("an item's subject class differs from its profile's kind")
            if (not by_rule or profile_kind != subject) and not self.time(captured) < cutoff:
                continue
            if source_id:
                source = sources.get((household, source_id))
                if source is not None and self._expired_source(source, profiles, chosen):
                    continue
            found += 1
            if owner not in made:
                pair = uuid_of(household), uuid_of(profile_id)
                hold = household in self._held and self.policy.hold_for(*pair, self.now)
                made[owner] = None if hold else pair
            ids = made[owner]
            if ids is None:
                held += 1
                continue
            admitted.append(((CHOICE if by_choice else RULE).kind, Member(*ids, uuid_of(item))))
        self.report.expired_items += found
        self.report.held += held
        return admitted

    def _expired_source(
        self,
        source: Any,
        profiles: dict[tuple[Any, Any], str],
        chosen: dict[tuple[Any, Any], dict[str, str]],
    ) -> bool:
        """The source is past its own effective age (whether or not its erasure is asked
        for already: either way the derived artifact goes with it)."""
        owner = (source.household_id, source.profile_id)
        profile_kind = profiles.get(owner)
        if profile_kind is None or (source.kind, profile_kind, None) not in self.ages.table:
            return False
        choices = chosen.get(owner)
        cutoff, _ = self.ages.of(
            source.kind, profile_kind, choices.get(source.kind) if choices else None
        )
        return self.time(source.captured_at) < cutoff

    def _queue(self, admitted: list[tuple[RequesterKind, Member]]) -> None:
        if self.dry_run:
            return
        for kind, member in admitted:
            waiting = self._to_request[kind]
            waiting.append(member)
            if len(waiting) >= self._held_back:
                self._send(kind)

    def _send(self, kind: RequesterKind) -> None:
        """Request what waits for this kind of requester: in (household, profile, item)
        order, one `request_batch` call per `batch_size` of it."""
        members, self._to_request[kind] = self._to_request[kind], []
        # Pages come in capture-time order, items of hundreds of profiles each; in this
        # order a call names few profiles and a batch job meets its rows in key order.
        members.sort(key=lambda m: (m.household_id.int, m.profile_id.int, m.item_id.int))
        requester = RULE if kind is RULE.kind else CHOICE
        for at in range(0, len(members), self.batch_size):
            outcome = self.container.erasure.request_batch(
                members[at : at + self.batch_size], requester, hold=self.container.hold
            )
            self.report.held += outcome.held
            for request_id in outcome.requests:
                self._add_request(request_id)

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
                    self._add_request(request_id)
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
