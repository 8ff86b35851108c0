"""The bulk form of the one question (`ConsentLedger.allows_many`): many subjects and
purposes at once, with the same rules as a single check (`ledger.derive`).

On PostgreSQL the store folds, for each subject, the latest event of each purpose into
two bit masks: the purposes it has events for (`seen`) and those whose latest event is
a grant under a notice no older than the purpose's last material change (`ok`). Only
those two numbers per subject cross the wire (subject ids go as binary arrays). Two
ways of reading, on two connections at once, with the covering subject index (no table
page is read):
- a few subjects: chunks of them, one backward index range per subject, DISTINCT ON the
  purpose;
- at least half of all profiles: ranges of households, each one backward scan of the
  index, the first entry of each (profile, purpose) its latest, joined with the wanted
  subjects.
Then, per subject: allowed = ok | (defaults & ~seen), where defaults are the purposes on
by default for an adult and none for a child (C3, C4). The same derivation as `derive`:
no event → default (a child: no); latest a withdrawal → no; latest a grant under an old
notice → no (C3); else yes.

On SQLite the events of each chunk are read raw, oldest first, and reduced in Python
(slower, same answers).
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from itertools import product
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tutela.consent.freshness import SQLITE_TIME
from tutela.consent.purposes import Purpose

if TYPE_CHECKING:
    from tutela.consent.ledger import Subject

Pairs = set[tuple[uuid.UUID, str]]
PG_CHUNK = 20_000
"""Subjects per statement on PostgreSQL (two arrays of ids as binary parameters)."""
PG_CONNECTIONS = 2
"""Statements of one bulk check run at once."""
RANGES_PER_CONNECTION = 4
RANGE_MIN = 20_000
"""Subjects from which a bulk check may read ranges of households instead."""
SQLITE_CHUNK = 2000
MASK_BITS = 62
"""Purposes per statement: masks are signed 64-bit integers."""

_PG_FOLD = """
SELECT {key}, bit_or(1::bigint << (pos - 1)) AS seen,
    bit_or(CASE WHEN granted AND notice_version >= (%(changed)s::int[])[pos]
        THEN 1::bigint << (pos - 1) ELSE 0 END) AS ok
FROM (
    SELECT l.*, array_position(%(purposes)s::text[], l.purpose::text) AS pos
    FROM ({latest}) l
) x
GROUP BY {key}
"""
"""Two masks per subject from its latest event per purpose. A purpose not wanted has no
position: its bit is NULL, which `bit_or` skips."""

_PG_LATERAL = _PG_FOLD.format(
    key="idx",
    latest="""
    SELECT w.idx, e.purpose, e.granted, e.notice_version
    FROM unnest(%(hh)b::uuid[], %(pid)b::uuid[]) WITH ORDINALITY AS w(hh, pid, idx)
    CROSS JOIN LATERAL (
        SELECT DISTINCT ON (e.purpose) e.purpose, e.granted, e.notice_version
        FROM consent_events e
        WHERE e.household_id = w.hh AND e.profile_id = w.pid AND e.at <= %(at)s
        ORDER BY e.purpose DESC, e.at DESC, e.id DESC
    ) e""",
)
"""Few subjects: one backward index range per subject."""

_PG_RANGE = (
    "SELECT w.idx, m.seen, m.ok FROM ("  # noqa: S608 (constant text; values are bound)
    + _PG_FOLD.format(
        key="household_id, profile_id",
        latest="""
    SELECT DISTINCT ON (e.household_id, e.profile_id, e.purpose)
        e.household_id, e.profile_id, e.purpose, e.granted, e.notice_version
    FROM consent_events e
    WHERE e.household_id >= %(lo)s AND e.household_id <= %(hi)s AND e.at <= %(at)s
    ORDER BY e.household_id DESC, e.profile_id DESC, e.purpose DESC, e.at DESC, e.id DESC""",
    )
    + """) m JOIN unnest(%(hh)b::uuid[], %(pid)b::uuid[]) WITH ORDINALITY AS w(hh, pid, idx)
    ON w.hh = m.household_id AND w.pid = m.profile_id"""
)
"""Most of the profiles: one backward scan of a range of households in the index, each
(profile, purpose)'s first entry its latest; joined with the wanted subjects."""


def _expand(
    subjects: Sequence[Subject],
    purposes: Sequence[Purpose],
    masks: dict[int, tuple[int, int]],
    into: Pairs,
) -> None:
    """Add the allowed (profile id, purpose) pairs given each subject's (seen, ok) masks
    (by index into `subjects`): subjects are grouped by their mask of allowed purposes,
    and each group's pairs are added in one call."""
    adult_defaults = sum(1 << i for i, p in enumerate(purposes) if p.adult_default)
    groups: dict[int, list[uuid.UUID]] = {}
    for i, subject in enumerate(subjects):
        seen, ok = masks.get(i, (0, 0))
        allowed = ok | ((0 if subject.is_child else adult_defaults) & ~seen)
        if allowed:
            groups.setdefault(allowed, []).append(subject.profile_id)
    for allowed, ids in groups.items():
        into.update(product(ids, [p.name for b, p in enumerate(purposes) if allowed >> b & 1]))


def allowed_pairs(
    session: Session, subjects: Sequence[Subject], purposes: Sequence[Purpose], at: datetime
) -> Pairs:
    """The allowed (profile id, purpose) pairs of every subject and purpose at `at`."""
    allowed: Pairs = set()
    bind = session.get_bind()
    # The answer is up to millions of new tuples: the cyclic collector, which would run
    # after every few hundred of them and walk the whole heap, waits until it is built
    # (it cost two thirds of the time). Nothing made here holds a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, len(purposes), MASK_BITS):
            group = purposes[start : start + MASK_BITS]
            if bind.dialect.name == "postgresql":
                engine = bind if isinstance(bind, Engine) else bind.engine
                _postgres(engine, subjects, group, at, allowed)
            else:
                _sqlite(session, subjects, group, at, allowed)
    finally:
        if collecting:
            gc.enable()
    return allowed


def _postgres(
    engine: Engine,
    subjects: Sequence[Subject],
    purposes: Sequence[Purpose],
    at: datetime,
    into: Pairs,
) -> None:
    base = {"purposes": [p.name for p in purposes], "changed": [p.changed_in for p in purposes]}

    def masks_of(part: tuple[Sequence[Subject], str, dict[str, Any]]) -> dict[int, tuple[int, int]]:
        chunk, sql, extra = part
        raw = engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            # A plan of index scans, run at once: compiling it would cost more.
            conn.execute("SET LOCAL jit = off")
            params = {
                **base,
                **extra,
                "hh": [s.household_id for s in chunk],
                "pid": [s.profile_id for s in chunk],
                "at": at,
            }
            rows = conn.execute(sql, params).fetchall()
            conn.rollback()
        finally:
            raw.close()
        return {int(idx) - 1: (int(seen or 0), int(ok or 0)) for idx, seen, ok in rows}

    parts = _parts(engine, subjects)
    if len(parts) == 1:
        _expand(parts[0][0], purposes, masks_of(parts[0]), into)
        return
    # Parts on PG_CONNECTIONS connections at once: the server's work is the bulk of it,
    # and the answers of each part are expanded, as it comes, while others are read.
    with ThreadPoolExecutor(max_workers=PG_CONNECTIONS) as pool:
        running = {pool.submit(masks_of, part): part for part in parts}
        for done in as_completed(running):
            _expand(running[done][0], purposes, done.result(), into)


def _parts(
    engine: Engine, subjects: Sequence[Subject]
) -> list[tuple[Sequence[Subject], str, dict[str, Any]]]:
    """How to read: when the subjects are at least half of all profiles, ranges of
    households, each read in index order; else chunks of subjects, each subject's own
    index range."""
    if len(subjects) >= RANGE_MIN:
        with engine.connect() as conn:
            profiles = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'profiles'")
            ).scalar()
        if 2 * len(subjects) >= float(profiles or 0):
            households = sorted({s.household_id.int for s in subjects})
            # More ranges than connections, so ranges' answers are expanded while the
            # server reads the next ones, and the last to come is small.
            step = -(-len(households) // (RANGES_PER_CONNECTION * PG_CONNECTIONS))
            parts: list[tuple[Sequence[Subject], str, dict[str, Any]]] = []
            for start in range(0, len(households), step):
                lo, hi = households[start], households[min(start + step, len(households)) - 1]
                chunk = [s for s in subjects if lo <= s.household_id.int <= hi]
                bounds = {"lo": uuid.UUID(int=lo), "hi": uuid.UUID(int=hi)}
                parts.append((chunk, _PG_RANGE, bounds))
            return parts
    return [
        (subjects[start : start + PG_CHUNK], _PG_LATERAL, {})
        for start in range(0, len(subjects), PG_CHUNK)
    ]


def _sqlite(
    session: Session,
    subjects: Sequence[Subject],
    purposes: Sequence[Purpose],
    at: datetime,
    into: Pairs,
) -> None:
    """Each chunk's events, oldest first, read raw (no type conversion per row): the last
    of each (profile, purpose) is its latest, and gives the masks as in SQL."""
    position = {p.name: i for i, p in enumerate(purposes)}
    when = at.astimezone(UTC).strftime(SQLITE_TIME)
    conn = session.connection()
    for start in range(0, len(subjects), SQLITE_CHUNK):
        chunk = subjects[start : start + SQLITE_CHUNK]
        index = {s.profile_id.hex: i for i, s in enumerate(chunk)}
        households = list(dict.fromkeys(s.household_id.hex for s in chunk))
        # By household, which SQLite looks up in the index one by one (a list of
        # (household, profile) pairs made it scan the table); other profiles of those
        # households are skipped below. Only placeholders are put in the text.
        sql = (
            "SELECT profile_id, purpose, granted, notice_version FROM consent_events"  # noqa: S608
            f" WHERE household_id IN ({', '.join(['?'] * len(households))})"
            f" AND purpose IN ({', '.join(['?'] * len(position))}) AND at <= ?"
            " ORDER BY at, id"
        )
        rows = conn.exec_driver_sql(sql, (*households, *position, when))
        latest: dict[tuple[str, str], tuple[int, int]] = {}
        for pid, purpose, granted, version in rows:
            if pid in index:
                latest[(pid, purpose)] = (granted, version)
        masks: dict[int, tuple[int, int]] = {}
        for (pid, purpose), (granted, version) in latest.items():
            i, at_bit = index[pid], position[purpose]
            bit = 1 << at_bit
            seen, ok = masks.get(i, (0, 0))
            if granted and version >= purposes[at_bit].changed_in:
                ok |= bit
            masks[i] = (seen | bit, ok)
        _expand(chunk, purposes, masks, into)
