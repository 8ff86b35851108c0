"""The bulk form of the one question (`ConsentLedger.allows_many`): many subjects and
purposes at once, with the same rules as a single check (`ledger.derive`).

On PostgreSQL one statement per chunk of subjects reads, for each subject, the latest
event of each wanted purpose (one backward index range per subject, DISTINCT ON the
purpose) and folds them in SQL into two bit masks per subject: the purposes it has
events for (`seen`) and those whose latest event is a grant under a notice no older
than the purpose's last material change (`ok`). Only those two numbers per subject
cross the wire. Then, per subject: allowed = ok | (defaults & ~seen), where defaults
are the purposes on by default for an adult and none for a child (C3, C4). The same
derivation as `derive`: no event → default (a child: no); latest a withdrawal → no;
latest a grant under an old notice → no (C3); else yes.

On SQLite the events of each chunk are read and reduced in Python (slower, same
answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import product
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import Session

from tutela.consent.freshness import Latest
from tutela.consent.models import ConsentEvent
from tutela.consent.purposes import Purpose

if TYPE_CHECKING:
    from tutela.consent.ledger import Subject

Pairs = set[tuple[uuid.UUID, str]]
PG_CHUNK = 20_000
"""Subjects per statement on PostgreSQL (two arrays of ids as binary parameters)."""
PG_CONNECTIONS = 2
"""Statements of one bulk check run at once."""
SQLITE_CHUNK = 2000
MASK_BITS = 62
"""Purposes per statement: masks are signed 64-bit integers."""

_PG_MASKS = """
SELECT w.idx, m.seen, m.ok
FROM unnest(%(hh)b::uuid[], %(pid)b::uuid[]) WITH ORDINALITY AS w(hh, pid, idx)
CROSS JOIN LATERAL (
    SELECT bit_or(l.bit) AS seen, bit_or(CASE WHEN l.ok THEN l.bit ELSE 0 END) AS ok
    FROM (
        SELECT DISTINCT ON (e.purpose)
            1::bigint << (array_position(%(purposes)s::text[], e.purpose::text) - 1) AS bit,
            e.granted AND e.notice_version >=
                (%(changed)s::int[])[array_position(%(purposes)s::text[], e.purpose::text)]
                AS ok
        FROM consent_events e
        WHERE e.household_id = w.hh AND e.profile_id = w.pid
          AND e.purpose = ANY(%(purposes)s::text[]) AND e.at <= %(at)s
        ORDER BY e.purpose DESC, e.at DESC, e.id DESC
    ) l
) m
WHERE m.seen IS NOT NULL
"""


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
    for start in range(0, len(purposes), MASK_BITS):
        group = purposes[start : start + MASK_BITS]
        if bind.dialect.name == "postgresql":
            engine = bind if isinstance(bind, Engine) else bind.engine
            _postgres(engine, subjects, group, at, allowed)
        else:
            _sqlite(session, subjects, group, at, allowed)
    return allowed


def _postgres(
    engine: Engine,
    subjects: Sequence[Subject],
    purposes: Sequence[Purpose],
    at: datetime,
    into: Pairs,
) -> None:
    names = [p.name for p in purposes]
    changed = [p.changed_in for p in purposes]

    def masks_of(chunk: Sequence[Subject]) -> dict[int, tuple[int, int]]:
        raw = engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            # A plan of index range scans, run at once: compiling it would cost more.
            conn.execute("SET LOCAL jit = off")
            params = {
                "hh": [s.household_id for s in chunk],
                "pid": [s.profile_id for s in chunk],
                "purposes": names,
                "changed": changed,
                "at": at,
            }
            rows = conn.execute(_PG_MASKS, params).fetchall()
            conn.rollback()
        finally:
            raw.close()
        return {int(idx) - 1: (int(seen), int(ok)) for idx, seen, ok in rows}

    chunks = [subjects[start : start + PG_CHUNK] for start in range(0, len(subjects), PG_CHUNK)]
    if len(chunks) == 1:
        _expand(chunks[0], purposes, masks_of(chunks[0]), into)
        return
    # Chunks on PG_CONNECTIONS connections at once: the server's work is the bulk of it,
    # and the answers of one chunk are expanded while the next are read.
    with ThreadPoolExecutor(max_workers=PG_CONNECTIONS) as pool:
        for chunk, masks in zip(chunks, pool.map(masks_of, chunks), strict=True):
            _expand(chunk, purposes, masks, into)


_t = ConsentEvent.__table__


def _sqlite(
    session: Session,
    subjects: Sequence[Subject],
    purposes: Sequence[Purpose],
    at: datetime,
    into: Pairs,
) -> None:
    from tutela.consent.ledger import derive  # noqa: PLC0415 (the rules live there)

    position = {p.name: i for i, p in enumerate(purposes)}
    for start in range(0, len(subjects), SQLITE_CHUNK):
        chunk = subjects[start : start + SQLITE_CHUNK]
        index = {s.profile_id: i for i, s in enumerate(chunk)}
        rows = session.execute(
            select(_t.c.profile_id, _t.c.purpose, _t.c.granted, _t.c.notice_version, _t.c.at)
            .where(
                tuple_(_t.c.household_id, _t.c.profile_id).in_(
                    [(s.household_id, s.profile_id) for s in chunk]
                ),
                _t.c.purpose.in_(list(position)),
                _t.c.at <= at,
            )
            .order_by(_t.c.at, _t.c.id)
        )
        latest: dict[tuple[uuid.UUID, str], Latest] = {}
        for pid, purpose, granted, version, when in rows:
            latest[(pid, purpose)] = Latest(bool(granted), int(version), when)
        masks: dict[int, tuple[int, int]] = {}
        for (pid, purpose), found in latest.items():
            i, bit = index[pid], 1 << position[purpose]
            seen, ok = masks.get(i, (0, 0))
            if derive(chunk[i].is_child, purposes[position[purpose]], found).allowed:
                ok |= bit
            masks[i] = (seen | bit, ok)
        _expand(chunk, purposes, masks, into)
