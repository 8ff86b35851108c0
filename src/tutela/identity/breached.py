"""Breached-password lookup by k-anonymity range (S5, R7) and the imports that fill it.

A password is reduced to its SHA-1 in uppercase hex (the Pwned Passwords layout); only
the first five hex characters ever reach a `RangeStore`, which answers with every
suffix under that prefix, and the suffixes are compared here. The same store serves
sign-up, password change and sign-in (R7), whether it holds Have I Been Pwned's full
download or only the common-password list Tutela seeds by default.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Integer, String, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from tutela.core.errors import ConfigurationError, InvalidInput
from tutela.identity.models import BreachedRange

PREFIX_LENGTH = 5
# The column is a 32-bit INTEGER; the largest real count is in the tens of millions.
MAX_COUNT = 2**31 - 1

_PREFIX = re.compile(r"[0-9A-Fa-f]{5}")
_FULL_LINE = re.compile(r"([0-9A-Fa-f]{40})(?::(\d{1,20}))?")
_RANGE_LINE = re.compile(r"([0-9A-Fa-f]{35})(?::(\d{1,20}))?")
_TABLE = cast(Table, BreachedRange.__table__)
# SQLAlchemy keeps an INSERT's rowcount only when asked to.
_ROWCOUNT = {"preserve_rowcount": True}


def sha1_hex(text: str) -> str:
    """SHA-1 of `text` as UTF-8, in uppercase hex: the key of the Pwned Passwords corpus."""
    # SHA-1 is the corpus's published format, used here to look up, never to store.
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


class RangeStore(Protocol):
    """Answers a k-anonymity range query (S5): every known suffix under one prefix."""

    def range(self, prefix: str) -> Mapping[str, int]:
        """Suffix (35 uppercase hex) -> breach count, for a prefix of 5 uppercase hex."""
        ...


def _require_prefix(prefix: str) -> None:
    if len(prefix) != PREFIX_LENGTH or not _PREFIX.fullmatch(prefix) or prefix != prefix.upper():
        raise ValueError("a range prefix is exactly 5 uppercase hex characters")


class SqlRangeStore:
    """The range store in the main database's `breached_ranges` table."""

    def __init__(self, sessions: sessionmaker[Session], *, session: Session | None = None) -> None:
        self._sessions = sessions
        self._session = session

    def bound(self, session: Session) -> SqlRangeStore:
        """The same store read through a request's own session (and its one connection):
        a request must never wait for a second connection from the pool it holds one of."""
        return SqlRangeStore(self._sessions, session=session)

    def range(self, prefix: str) -> Mapping[str, int]:
        _require_prefix(prefix)
        query = select(BreachedRange.suffix, BreachedRange.count).where(
            BreachedRange.prefix == prefix
        )
        if self._session is not None:
            return dict(self._session.execute(query).all())
        with self._sessions() as session:
            return dict(session.execute(query).all())


class MemoryRangeStore:
    """An in-memory range store for tests and for callers with no database."""

    def __init__(self) -> None:
        self._ranges: dict[str, dict[str, int]] = {}

    def add(self, password: str, count: int = 1) -> None:
        digest = sha1_hex(password)
        suffixes = self._ranges.setdefault(digest[:PREFIX_LENGTH], {})
        suffixes[digest[PREFIX_LENGTH:]] = max(count, suffixes.get(digest[PREFIX_LENGTH:], 0))

    def range(self, prefix: str) -> Mapping[str, int]:
        _require_prefix(prefix)
        return dict(self._ranges.get(prefix, {}))


class BreachChecker:
    """How often a password appears in the breach corpus (NIST SP 800-63B §5.1.1.2; S5, R7).

    The password is checked as typed and lowercased, because the default corpus holds
    lowercased entries only. Only the 5-hex prefix of each hash leaves this object.
    """

    def __init__(self, store: RangeStore) -> None:
        self._store = store

    def within(self, session: Session) -> BreachChecker:
        """This checker reading through `session` when its store is the SQL one."""
        if isinstance(self._store, SqlRangeStore):
            return BreachChecker(self._store.bound(session))
        return self

    def count(self, password: str) -> int:
        """The largest breach count of the password or its lowercased form; 0 when unknown."""
        by_prefix: dict[str, set[str]] = {}
        for digest in {sha1_hex(password), sha1_hex(password.lower())}:
            by_prefix.setdefault(digest[:PREFIX_LENGTH], set()).add(digest[PREFIX_LENGTH:])
        found = 0
        for prefix, suffixes in by_prefix.items():
            known = self._store.range(prefix)
            found = max([found, *(known.get(suffix, 0) for suffix in suffixes)])
        return found


@dataclass(frozen=True)
class ImportResult:
    """Lines read (blank ones not counted), rows inserted or raised, lines that changed nothing."""

    lines: int
    stored: int
    skipped: int


class _Import:
    """One import, in one transaction: a malformed line anywhere leaves nothing behind."""

    def __init__(self, session: Session, batch: int) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._session = session
        self._batch = batch
        self._pending: dict[tuple[str, str], int] = {}
        self.lines = 0
        self.stored = 0

    def feed(self, lines: Iterable[str], *, prefix: str | None, source: str) -> None:
        if prefix is not None:
            if not _PREFIX.fullmatch(prefix):
                raise InvalidInput("A range prefix is exactly 5 hex characters.")
            prefix = prefix.upper()
        pattern = _FULL_LINE if prefix is None else _RANGE_LINE
        expected = "HASH40[:COUNT]" if prefix is None else "SUFFIX35[:COUNT]"
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            self.lines += 1
            match = pattern.fullmatch(line)
            if match is None:
                # The line itself is not echoed: a wrong file could hold plaintext passwords.
                raise InvalidInput(f"{source} line {number}: expected {expected} in hex.")
            digest = (prefix or "") + match.group(1).upper()
            count = min(int(match.group(2) or 1), MAX_COUNT)
            if count == 0:  # padding entries of the range API: not a breach
                continue
            key = (digest[:PREFIX_LENGTH], digest[PREFIX_LENGTH:])
            self._pending[key] = max(count, self._pending.get(key, 0))
            if len(self._pending) >= self._batch:
                self.flush()

    def flush(self) -> None:
        if self._pending:
            rows = [{"prefix": p, "suffix": s, "count": c} for (p, s), c in self._pending.items()]
            self.stored += _upsert(self._session, rows)
            self._pending.clear()

    def result(self) -> ImportResult:
        return ImportResult(lines=self.lines, stored=self.stored, skipped=self.lines - self.stored)


def _upsert(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert rows, raising the count of those already there; returns rows written.

    `rows` must not repeat a (prefix, suffix): one statement may not touch a row twice.
    """
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    if dialect == "sqlite":
        statement: Any = sqlite.insert(_TABLE)
        statement = _keep_larger(statement)
        # sqlite3's executemany sums the rows each insert or update changed.
        return max(connection.execute(statement, rows, execution_options=_ROWCOUNT).rowcount, 0)
    if dialect == "postgresql":
        # One INSERT ... SELECT FROM unnest(arrays): about three times faster than
        # executemany for a big import, and its rowcount is exact.
        source = (
            func.unnest(
                bindparam("prefixes", [r["prefix"] for r in rows], type_=ARRAY(String)),
                bindparam("suffixes", [r["suffix"] for r in rows], type_=ARRAY(String)),
                bindparam("counts", [r["count"] for r in rows], type_=ARRAY(Integer)),
            )
            .table_valued("prefix", "suffix", "count")
            .render_derived(name="incoming")
        )
        statement = postgresql.insert(_TABLE).from_select(
            ["prefix", "suffix", "count"],
            select(source.c["prefix"], source.c["suffix"], source.c["count"]),
        )
        return max(
            connection.execute(_keep_larger(statement), execution_options=_ROWCOUNT).rowcount, 0
        )
    raise ConfigurationError(f"the breach store does not support {dialect}")


def _keep_larger(statement: Any) -> Any:
    return statement.on_conflict_do_update(
        index_elements=[_TABLE.c.prefix, _TABLE.c.suffix],
        set_={"count": statement.excluded["count"]},
        where=statement.excluded["count"] > _TABLE.c["count"],
    )


def import_lines(
    sessions: sessionmaker[Session],
    lines: Iterable[str],
    *,
    prefix: str | None,
    batch: int = 10_000,
) -> ImportResult:
    """Import Pwned Passwords lines: `HASH40[:COUNT]`, or `SUFFIX35[:COUNT]` under `prefix`.

    Blank lines are ignored, CRLF is tolerated, hex may be any case (stored uppercase), a
    missing count is 1 and a count of 0 (range padding) is skipped. A row already stored
    keeps the larger count. The whole input is written in one transaction, so a malformed
    line (`InvalidInput`, naming its line number) leaves nothing of the import stored.
    """
    with sessions() as session, session.begin():
        job = _Import(session, batch)
        job.feed(lines, prefix=prefix, source="input")
        job.flush()
    return job.result()


def _range_file_prefix(path: Path) -> str | None:
    return path.stem.upper() if _PREFIX.fullmatch(path.stem) else None


def _read_lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as handle:
            yield from handle
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name} is not a UTF-8 text file.") from exc


def import_path(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    prefix: str | None = None,
    batch: int = 10_000,
) -> ImportResult:
    """Import a file or a directory of range files, in one transaction.

    A file holds full-hash lines, or range lines when `prefix` is given or its name is a
    prefix (`ABCDE.txt`). A directory holds range files `ABCDE.txt`, as Have I Been
    Pwned's downloader writes them; hidden files are ignored, any other file is refused.
    """
    if path.is_dir():
        if prefix is not None:
            raise InvalidInput("A prefix applies to one range file, not to a directory.")
        files: list[tuple[Path, str | None]] = []
        for child in sorted(path.iterdir()):
            if child.name.startswith("."):
                continue
            child_prefix = _range_file_prefix(child)
            if child_prefix is None or child.suffix != ".txt" or not child.is_file():
                raise InvalidInput(f"{child.name} is not a range file named like ABCDE.txt.")
            files.append((child, child_prefix))
        if not files:
            raise InvalidInput(f"{path.name} holds no range files.")
    elif path.is_file():
        files = [(path, prefix)] if prefix is not None else [(path, _range_file_prefix(path))]
    else:
        raise InvalidInput(f"{path.name} is neither a file nor a directory.")
    with sessions() as session, session.begin():
        job = _Import(session, batch)
        for file, file_prefix in files:
            job.feed(_read_lines(file), prefix=file_prefix, source=file.name)
        job.flush()
    return job.result()


def _common_passwords_file() -> Path:
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("Django's common-password list is not installed.")
    return Path(next(iter(spec.submodule_search_locations))) / (
        "contrib/auth/common-passwords.txt.gz"
    )


def default_corpus() -> Iterator[tuple[str, int]]:
    """(SHA-1 uppercase hex, pseudo-count) of Django's 19,640 common passwords (BSD-3-Clause).

    The list is lowercased, most common first, without counts: the count is made up from
    the rank so the most common weigh most. Django itself is never imported.
    """
    text = gzip.decompress(_common_passwords_file().read_bytes()).decode("utf-8")
    rank = 0
    for line in text.splitlines():
        word = line.strip()
        if word:
            yield sha1_hex(word), max(1, 1_000_000 // (rank + 1))
            rank += 1


def seed_default(sessions: sessionmaker[Session]) -> int:
    """Load the default corpus when the breach store is empty; returns rows added (S1, R7).

    Idempotent: a store that holds any range, seeded or imported, is left as it is.
    """
    with sessions() as session, session.begin():
        if session.scalar(select(BreachedRange.prefix).limit(1)) is not None:
            return 0
        rows = [
            {"prefix": digest[:PREFIX_LENGTH], "suffix": digest[PREFIX_LENGTH:], "count": count}
            for digest, count in default_corpus()
        ]
        return _upsert(session, rows)
