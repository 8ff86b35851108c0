"""The embedded store's files: read raw without breaking SQLite's locks, free space
rewritten, the write-ahead log truncated in bounded time (A8, C1, S6).

These are properties of SQLite files, so they run on SQLite only, each on its own file.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tutela.db.engine import make_engine, purge_journal, rewrite_free_space
from tutela.erasure import rawscan


def _files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal")]


def _hits(
    db: Path, *, hex_ids: set[bytes] | None = None, needles: list[bytes] | None = None
) -> int:
    """Hits in the file and its WAL, read by the raw scan's child process: this process
    holds connections to the file, so it must not open and close it itself."""
    found = rawscan.scan(_files(db), hex_ids=hex_ids or set(), needles=needles or [], timeout=60)
    return sum(h.count for h in found.values())


def _deleted_files_of_this_process() -> list[str]:
    gone = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            gone.append(target)
    return gone


def _another_process_reads(db: Path) -> list[str]:
    """Open, read and close the database in another process, as any CLI command does;
    return what it read."""
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "print('\\n'.join(r[0] for r in c.execute('SELECT v FROM notes ORDER BY v')))\n"
        "c.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
def test_scanning_a_live_database_keeps_this_process_locks(tmp_path: Path) -> None:
    """The scan reads in a child process: afterwards another process's last close does
    not take this process's database for unused, and delete its WAL under it."""
    db = tmp_path / "live.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (v TEXT)"))
            conn.execute(text("INSERT INTO notes VALUES ('first')"))
        with engine.connect() as conn:  # a pooled connection that has read, as a server's
            conn.execute(text("SELECT count(*) FROM notes")).one()
        assert _hits(db, needles=[b"first"]) == 1
        assert _another_process_reads(db) == ["first"]
        assert not [f for f in _deleted_files_of_this_process() if "live.db" in f]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO notes VALUES ('second')"))
        assert _another_process_reads(db) == ["first", "second"], "a write was lost"
    finally:
        engine.dispose()


def test_every_kind_of_needle_is_found_in_the_file_and_in_its_wal(tmp_path: Path) -> None:
    """An erased id as SQLite keeps it (32 hex digits) and hyphenated (a blob key), and a
    ciphertext sample: in the WAL while the rows are only there, in the file once they
    are checkpointed into it."""
    db = tmp_path / "store.db"
    erased, sample = uuid.uuid4(), os.urandom(24)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE items (id TEXT, blob_key TEXT, sealed BLOB)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute(
            "INSERT INTO items VALUES (?, ?, ?)",
            (erased.hex, f"household/{erased}/voice", os.urandom(12) + sample + os.urandom(8)),
        )
        wal = db.with_name("store.db-wal")
        hex_ids, needles = {erased.hex.encode()}, [os.urandom(24), sample]
        found = rawscan.scan(_files(db), hex_ids=hex_ids, needles=needles, timeout=60)
        assert found == {wal: rawscan.FileHits(2, [1]), db: rawscan.FileHits(0, [])}
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        found = rawscan.scan(_files(db), hex_ids=hex_ids, needles=needles, timeout=60)
        assert found == {wal: rawscan.FileHits(0, []), db: rawscan.FileHits(2, [1])}
    finally:
        conn.close()


def test_one_scan_serves_several_sets_and_leaves_out_missing_files(tmp_path: Path) -> None:
    """Files larger than a block, mapped and read in blocks: a needle across a block's
    edge counts once, each set gets its own hits (a needle two jobs share counts for
    both), an empty file has none and a missing one is not in the answer."""
    shared, own = uuid.uuid4().hex.encode(), uuid.uuid4().hex.encode()
    sample = os.urandom(24)
    big = tmp_path / "big.db"
    data = bytearray(os.urandom(5 * rawscan.BLOCK))
    data[rawscan.BLOCK - 10 : rawscan.BLOCK + 22] = shared
    data[3 * rawscan.BLOCK - 5 : 3 * rawscan.BLOCK + 19] = sample
    data[4 * rawscan.BLOCK : 4 * rawscan.BLOCK + 32] = own
    big.write_bytes(bytes(data))
    empty = tmp_path / "empty.db-wal"
    empty.touch()
    missing = tmp_path / "missing.db-wal"
    sets = [rawscan.NeedleSet({shared, own}, [sample]), rawscan.NeedleSet({shared}, [b"x" * 30])]
    first, second = rawscan.scan_sets([big, empty, missing], sets, timeout=60)
    assert first == {big: rawscan.FileHits(2, [0]), empty: rawscan.FileHits(0, [])}
    assert second == {big: rawscan.FileHits(1, []), empty: rawscan.FileHits(0, [])}
    assert rawscan.scan([missing], hex_ids={shared}, timeout=60) == {}


def _stale_copies(engine: Engine, db: Path) -> tuple[set[bytes], set[bytes]]:
    """Rows written, grown in place and deleted one by one, household after household,
    until SQLite leaves a deleted id in a rebalanced page's unallocated space. Returns
    (ids deleted, ids kept)."""
    rng = random.Random(1)
    kept: dict[str, list[bytes]] = {}
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE rows (h TEXT, id TEXT, v BLOB, PRIMARY KEY (h, id))"))
    for n in range(200):
        h = uuid.UUID(int=rng.getrandbits(128)).hex
        ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(rng.randint(5, 30))]
        with engine.begin() as conn:
            for i in ids:
                conn.execute(
                    text("INSERT INTO rows VALUES (:h, :i, :v)"),
                    {"h": h, "i": i, "v": os.urandom(rng.randint(40, 400))},
                )
        kept[h] = [i.encode() for i in ids]
        if n < 4:
            continue
        victim = rng.choice(sorted(kept)[:-1])
        with engine.begin() as conn:
            # Marked first (the row grows, pages split), then deleted row by row.
            conn.execute(
                text("UPDATE rows SET v = v || randomblob(16) WHERE h = :h"), {"h": victim}
            )
            for i in kept[victim]:
                conn.execute(
                    text("DELETE FROM rows WHERE h = :h AND id = :i"),
                    {"h": victim, "i": i.decode()},
                )
        deleted = set(kept.pop(victim))
        purge_journal(engine)
        if _hits(db, hex_ids=deleted):
            return deleted, {i for ids in kept.values() for i in ids}
    pytest.fail("SQLite left no stale copy in 200 rounds: the recipe needs another look")


def test_rewriting_free_space_removes_stale_copies_and_keeps_every_live_row(
    tmp_path: Path,
) -> None:
    """secure_delete zeroes a deleted cell, not the copy a page rebalance left behind;
    VACUUM through SQLite rewrites every page from the live rows (C1, S6)."""
    db = tmp_path / "pages.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        deleted, live = _stale_copies(engine, db)
        rewrite_free_space(engine)
        assert _hits(db, hex_ids=deleted) == 0
        assert db.with_name(db.name + "-wal").stat().st_size == 0
        with engine.connect() as conn:
            ids = {r[0].encode() for r in conn.execute(text("SELECT id FROM rows"))}
        assert ids == live
        # Each live id is in its row and in the primary key's index.
        assert _hits(db, hex_ids=set(sorted(live)[:5])) == 10
    finally:
        engine.dispose()


def test_truncating_the_log_gives_up_in_bounded_time_behind_a_reader(tmp_path: Path) -> None:
    """A reader holding an old snapshot keeps the WAL from being emptied: the truncation
    is an error after its wait (the erasure step is retried), never a long hang; once the
    reader is done it succeeds."""
    db = tmp_path / "log.db"
    engine = make_engine(f"sqlite:///{db}")
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (v TEXT)"))
            conn.execute(text("INSERT INTO notes VALUES ('one')"))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM notes").fetchall()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO notes VALUES ('two')"))
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="could not be truncated"):
            purge_journal(engine, wait_seconds=1.0)
        assert time.monotonic() - started < 3
        reader.execute("COMMIT")
        purge_journal(engine, wait_seconds=1.0)
        assert db.with_name(db.name + "-wal").stat().st_size == 0
        with engine.connect() as conn:  # the connection's usual busy timeout is back
            assert conn.exec_driver_sql("PRAGMA busy_timeout").one()[0] == 10_000
    finally:
        reader.close()
        engine.dispose()


def test_a_scan_that_cannot_finish_is_an_error_not_a_clean_result(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    db.write_bytes(os.urandom(1024))
    with pytest.raises(rawscan.RawScanFailed):
        rawscan.scan([db], hex_ids={uuid.uuid4().hex.encode()}, timeout=0.001)
