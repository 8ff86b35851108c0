"""Conditions over many ids as ONE bound parameter: plans that do not degrade.

A growing `id IN (:p1, ..., :p500)` list is a new statement for every length, and once
psycopg prepares a statement PostgreSQL may switch it to a generic plan that scans a
whole household per chunk (measured: ~125 ms a chunk instead of ~8). These forms bind
the whole set as one value instead: an array on PostgreSQL (`= ANY(:ids)`, `unnest` for
pairs), a JSON array read by `json_each` on SQLite. The statement's text is the same
for 1 id and for 100,000, so its plan is too, and both stores search the primary key
for each id (A5, A8 at scale).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Uuid, any_, bindparam, func, literal_column, select, tuple_
from sqlalchemy.dialects import postgresql as pg


def _array(values: Sequence[uuid.UUID]) -> Any:
    return bindparam(None, list(values), type_=pg.ARRAY(Uuid()))


def _json(values: Any) -> Any:
    # SQLAlchemy keeps a UUID on SQLite as its 32 hex digits; json_each reads them back.
    return func.json_each(bindparam(None, json.dumps(values)))


def any_of(column: Any, values: Iterable[uuid.UUID], *, postgresql: bool) -> ColumnElement[bool]:
    """`column` is one of `values` (UUIDs)."""
    ids = list(values)
    if postgresql:
        return column == any_(_array(ids))  # type: ignore[no-any-return]
    each: Any = select(literal_column("value")).select_from(_json([v.hex for v in ids]))
    return column.in_(each)  # type: ignore[no-any-return]


def pair_in(
    first: Any,
    second: Any,
    pairs: Iterable[tuple[uuid.UUID, uuid.UUID]],
    *,
    postgresql: bool,
) -> ColumnElement[bool]:
    """`(first, second)` is one of `pairs`: a batch's (household, item) keys."""
    both = list(pairs)
    if postgresql:
        rows: Any = select(literal_column("*")).select_from(
            func.unnest(_array([a for a, _ in both]), _array([b for _, b in both]))
        )
        return tuple_(first, second).in_(rows)
    value: Any = literal_column("value")
    rows2: Any = select(
        func.json_extract(value, "$[0]"), func.json_extract(value, "$[1]")
    ).select_from(_json([[a.hex, b.hex] for a, b in both]))
    return tuple_(first, second).in_(rows2)
