"""What PostgreSQL's pages still hold of erased rows: the remnant check's view of what an
attacker with the database files sees (A8, C1, S6).

A DELETE leaves the row in its page as a dead tuple until VACUUM, and a plain VACUUM only
marks the space free: the bytes stay until the page is reused (or the table rewritten with
`VACUUM FULL`, which locks it). The WAL, replicas and backups keep their own copies. Tutela
cannot overwrite any of that from SQL, so it does not pretend to: it reads the raw pages
of the key store's and the main store's tables (the `pageinspect` extension, which needs a
superuser) and counts how many times the erased subject's ids still appear there. The
receipt reports those counts as stale copies, beside the time by which the key epoch
makes every copy of the keys unreadable (see `tutela.vault.rotation`); their other content
is ciphertext under those keys.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence

import ahocorasick
from sqlalchemy import Engine, text

log = logging.getLogger("tutela.erasure")

KEY_TABLES = ("profile_keys", "item_keys")


def _relations(conn: object, tables: Sequence[str]) -> list[tuple[str, int]]:
    """The tables and their indexes, with their sizes in blocks."""
    rows = conn.execute(  # type: ignore[attr-defined]
        text(
            "SELECT c.oid::regclass::text, "
            "pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c "
            "WHERE c.oid IN (SELECT t.oid FROM pg_class t WHERE t.relname = ANY(:names) "
            "AND t.relkind = 'r' AND pg_table_is_visible(t.oid) "
            "UNION SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = ANY(:names) AND t.relkind = 'r' AND pg_table_is_visible(t.oid))"
        ),
        {"names": list(tables)},
    )
    return [(str(r[0]), int(r[1])) for r in rows]


_AVAILABLE: dict[str, bool] = {}


def available(engine: Engine) -> bool:
    """Whether this connection may read raw pages (pageinspect installed, or installable,
    and a role allowed to use it). Asked once per database and process."""
    if engine.dialect.name != "postgresql":
        return False
    name = engine.url.render_as_string(hide_password=True)
    if name not in _AVAILABLE:
        _AVAILABLE[name] = _probe(engine)
    return _AVAILABLE[name]


def _probe(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
            conn.commit()
            conn.execute(text("SELECT get_raw_page('pg_class', 0)"))
    except Exception as exc:
        log.info("raw pages cannot be read here: %s", type(exc).__name__)
        return False
    return True


def occurrences(engine: Engine, tables: Iterable[str], ids: Iterable[uuid.UUID]) -> int:
    """How many times any of `ids` (as the 16 bytes PostgreSQL stores a uuid in) appears in
    the raw pages of `tables` and their indexes: live rows, dead tuples and free space."""
    return occurrences_by(engine, tables, [list(ids)])[0]


def occurrences_by(
    engine: Engine, tables: Iterable[str], sets: Sequence[Sequence[uuid.UUID]]
) -> list[int]:
    """`occurrences` for several sets of ids at once (several erasures verified
    together): every page is read once, and each hit counts for each set its id is in."""
    automaton = ahocorasick.Automaton()
    owners: dict[uuid.UUID, list[int]] = {}
    for k, ids in enumerate(sets):
        for value in ids:
            owners.setdefault(value, []).append(k)
    for value in owners:
        automaton.add_word(value.bytes.decode("latin-1"), value)
    found = [0] * len(sets)
    if len(automaton) == 0:
        return found
    automaton.make_automaton()
    with engine.connect() as conn:
        for relation, blocks in _relations(conn, list(tables)):
            if not blocks:
                continue
            pages = conn.execute(
                text("SELECT get_raw_page(:rel, n::int) FROM generate_series(0, :last) n"),
                {"rel": relation, "last": blocks - 1},
            )
            for (page,) in pages:
                for _, value in automaton.iter(bytes(page).decode("latin-1")):
                    for k in owners[value]:
                        found[k] += 1
    return found
