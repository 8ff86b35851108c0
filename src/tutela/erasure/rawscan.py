"""The raw scan: erased ids and ciphertext in the bytes of the embedded store's files.

The remnant check (A8; C1, S6) reads the SQLite files byte for byte, free pages,
unallocated space and write-ahead log included, because a row deleted but still in the
file is not deleted. It reads them in a child process, never in the process that asked.

Why a child process. SQLite's locks are POSIX advisory locks, which belong to a process
and a file, not to a descriptor: when a process closes *any* descriptor on the database
file (`Path.read_bytes()`, `open()`, an `mmap` whose file is closed), every lock its
SQLite connections hold on that file is gone ("How To Corrupt An SQLite Database File",
§2.2). The next process to close its last connection (any `tutela` command beside a
served process) then takes the exclusive lock, believes it is the last user,
checkpoints and deletes the `-wal` and `-shm` files under the server, whose later writes
go to deleted files. A child that holds no connection can open and close what it likes.
The alternatives were weighed: one descriptor per file kept open for the process's life
and read with `os.pread` works only while nothing else in the process (a test, a
library) opens the file, and must be right in every process that scans; SQLite's own
page reader (the `sqlite_dbpage` table) is an optional build of SQLite, missing from
Debian's, and reads pages, not the bytes of the WAL. A child costs one interpreter start
per scan (`python -I -S` runs this file by path: no site, no `.pth` file, none of
Tutela's settings; it imports the standard library, and `ahocorasick` from the folder
the parent names), against a scan that reads the whole files anyway.

One scan serves many needle sets (`scan_sets`: the jobs of a batch, verified together).
Every needle of every set goes into one Aho–Corasick automaton, and each file is read
once, memory-mapped, whatever the number of needles or sets; a hit is credited to every
set that holds the needle. What counts, in each file given (a database file and its
`-wal`):
- an erased id as SQLite keeps a UUID, 32 lowercase hex digits, at every occurrence,
  wherever it lies. (Before the automaton the scan looked only at 32-digit windows
  aligned to either end of a run of hex digits, where SQLite writes a row's UUID columns
  side by side. Anywhere finds all of those and more. A false hit needs 32 digits of
  other data to spell an erased id, random bits included (74 in a UUIDv7, 122 in a
  UUIDv4): at most one chance in 2^74 per position and id, and a false hit only costs a
  needless rewrite and a retried check, never a remnant called clean.)
- an erased id in its hyphenated form (blob keys hold it), at every occurrence. (Before,
  once per id and file for fewer than 64 ids and at every occurrence for more; one rule
  now, the hex form's.)
- any of the byte needles (samples of the subject's ciphertexts: sealed fields, MACs,
  wrapped keys), once per needle and file, named by its index in its set.

How the bytes are read. The file is mapped read-only, never copied whole into memory.
The automaton (about 35 MB/s) reads spans of it, each with the `longest needle - 1`
bytes before it, and counts the matches whose last byte lies in the span, so a needle
across an edge counts once. When every needle is at least 15 bytes long (ids are 32 and
36, samples 24), a cheaper pass decides which spans: the 8-byte words at every
`stride`-th offset of the file (16, or 8 when a needle is shorter than 23 bytes) are
looked up in the set of each needle's words at its last `stride` offsets, one of which
every occurrence puts on a multiple of the stride. Only around such a word does the
automaton run; a file with none costs that lookup alone. Otherwise the automaton reads
the whole file in blocks (`BLOCK`). A file that shrinks while it is mapped (another
process truncating its WAL) kills the child with SIGBUS: the scan failed, never a clean
result.
"""

from __future__ import annotations

import base64
import codecs
import json
import mmap
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

BLOCK = 1 << 15
"""Bytes the automaton reads at a time when it reads a whole file, and bytes of words
looked up at a time before it."""
_WORD = 8
_STRIDES = (16, 8)  # the widest the needles allow: half the lookups of the narrower
_ID = -1  # the automaton's mark of an erased id (a needle's is its index, >= 0)


class RawScanFailed(RuntimeError):
    """The scanning process did not finish (it crashed, or outlived its time limit)."""


class NeedleSet:
    """What one job (or one caller) looks for: erased ids (32 lowercase hex digits, as
    SQLite keeps a UUID) and byte needles."""

    __slots__ = ("hex_ids", "needles")

    def __init__(self, hex_ids: Collection[bytes] = (), needles: Sequence[bytes] = ()) -> None:
        self.hex_ids = frozenset(hex_ids)
        self.needles = tuple(needles)


class FileHits:
    """What the scan found in one file for one set: occurrences of erased ids, and which
    needles (their indexes in the set)."""

    __slots__ = ("ids", "needles")

    def __init__(self, ids: int, needles: Sequence[int]) -> None:
        self.ids = ids
        self.needles = tuple(needles)

    @property
    def count(self) -> int:
        return self.ids + len(self.needles)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileHits):
            return NotImplemented
        return (self.ids, self.needles) == (other.ids, other.needles)

    def __hash__(self) -> int:
        return hash((self.ids, self.needles))

    def __repr__(self) -> str:
        return f"FileHits(ids={self.ids}, needles={self.needles})"


def scan(
    paths: Iterable[Path],
    *,
    hex_ids: Collection[bytes] = (),
    needles: Sequence[bytes] = (),
    timeout: float | None = None,
) -> dict[Path, FileHits]:
    """Scan `paths` in a child process for one set; files that do not exist are left out.

    `hex_ids` are UUIDs as 32 lowercase hex digits; `needles` are any bytes. Raises
    `RawScanFailed` if the child fails or takes longer than `timeout` seconds.
    """
    return scan_sets(paths, [NeedleSet(hex_ids, needles)], timeout=timeout)[0]


def scan_sets(
    paths: Iterable[Path], sets: Sequence[NeedleSet], *, timeout: float | None = None
) -> list[dict[Path, FileHits]]:
    """Scan `paths` once in a child process for all `sets`: one dict per set, in order,
    each with every file that exists. Raises `RawScanFailed` as `scan` does."""
    import importlib.util  # noqa: PLC0415 (the child never needs these)
    import subprocess  # noqa: PLC0415

    files = [str(p) for p in paths]
    spec = importlib.util.find_spec("ahocorasick")
    if spec is None or spec.origin is None:
        raise RawScanFailed("the raw scan needs pyahocorasick, which is not installed")
    library = Path(spec.origin).parent  # a module's folder; a package's is its parent
    if spec.submodule_search_locations is not None:
        library = library.parent
    request = {
        "files": files,
        # The child runs without site: it imports the automaton from where this process would.
        "library": str(library),
        "sets": [
            {
                "hex_ids": sorted(h.decode("ascii") for h in s.hex_ids),
                "needles": [base64.b64encode(n).decode("ascii") for n in s.needles],
            }
            for s in sets
        ],
    }
    # The child needs no secret: none of Tutela's settings go with it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTELA_")}
    try:
        # The argument list is this interpreter and this file: nothing from outside.
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-I", "-S", str(Path(__file__).resolve())],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RawScanFailed(f"the raw scan took longer than {timeout} s") from None
    if done.returncode != 0:
        raise RawScanFailed(_failure(done))
    found: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)["files"]
    return [
        {
            Path(name): FileHits(per_set[n]["ids"], per_set[n]["needles"])
            for name, per_set in found.items()
            if name in files
        }
        for n in range(len(sets))
    ]


def _failure(done: subprocess.CompletedProcess[bytes]) -> str:
    import signal  # noqa: PLC0415

    if done.returncode == -signal.SIGBUS:
        return "the raw scan's process was stopped: a file shrank while it was read"
    return f"the raw scan's process exited with status {done.returncode}"


class Search:
    """The compiled search for several needle sets at once (no I/O: the child's work,
    and testable alone). `block` is for tests."""

    def __init__(self, sets: Sequence[NeedleSet], *, block: int = BLOCK) -> None:
        import ahocorasick  # noqa: PLC0415 (the child adds its folder to sys.path first)

        postings: dict[bytes, list[tuple[int, int]]] = {}
        for n, s in enumerate(sets):
            for h in s.hex_ids:
                postings.setdefault(h, []).append((n, _ID))
                postings.setdefault(_hyphenate(h), []).append((n, _ID))
            for i, needle in enumerate(s.needles):
                if needle:
                    postings.setdefault(needle, []).append((n, i))
        self._sets = len(sets)
        self._automaton: Any = None
        self._longest = max(map(len, postings), default=0)
        self._block = max(block, 4 * self._longest)  # what is read twice stays a small share
        self._stride = 0
        self._words: frozenset[int] = frozenset()
        if not postings:
            return
        self._automaton = ahocorasick.Automaton()
        for word, where in postings.items():
            self._automaton.add_word(word.decode("latin-1"), tuple(where))
        self._automaton.make_automaton()
        shortest = min(map(len, postings))
        self._stride = next((s for s in _STRIDES if shortest >= s + _WORD - 1), 0)
        if self._stride:
            # An occurrence of a needle puts one of its words at its last `stride`
            # offsets on a multiple of the stride (the needle is long enough for that).
            self._words = frozenset(
                int.from_bytes(word[o : o + _WORD], sys.byteorder)
                for word in postings
                for o in range(len(word) - _WORD + 1 - self._stride, len(word) - _WORD + 1)
            )

    def hits(self, data: bytes | mmap.mmap) -> list[FileHits]:
        """What `data` holds of each set, in the sets' order."""
        ids = [0] * self._sets
        found: list[set[int]] = [set() for _ in range(self._sets)]
        if self._automaton is not None and len(data):
            with memoryview(data) as view:
                if self._stride:
                    # A match counts at its anchor, the last multiple of the stride where
                    # one of its words lies: its last byte is in [at + 7, at + 7 + stride).
                    spans = ((at + _WORD - 1, self._stride) for at in self._anchors(view))
                else:
                    spans = ((start, self._block) for start in range(0, len(view), self._block))
                for first, size in spans:
                    self._count(view, first, first + size, ids, found)
        return [FileHits(ids[n], sorted(found[n])) for n in range(self._sets)]

    def _anchors(self, view: memoryview) -> Iterator[int]:
        """The multiples of the stride where one of the needles' words lies."""
        stride, words = self._stride, self._words
        count = (len(view) - _WORD) // stride + 1 if len(view) >= _WORD else 0
        per_read = self._block // stride
        for first in range(0, count, per_read):
            start, n = first * stride, min(per_read, count - first)
            with view[start : start + (n - 1) * stride + _WORD] as part, part.cast("Q") as q:
                values = q[:: stride // _WORD].tolist()
            if not words.isdisjoint(values):
                yield from (start + i * stride for i, v in enumerate(values) if v in words)

    def _count(
        self, view: memoryview, first: int, end: int, ids: list[int], found: list[set[int]]
    ) -> None:
        """The matches whose last byte lies in [first, end), read with what comes before."""
        begin = max(0, first - self._longest + 1)
        with view[begin:end] as part:
            text = codecs.latin_1_decode(part)[0]
        for last, where in self._automaton.iter(text):
            if last < first - begin:
                continue  # it ends before the span: counted with the one before
            for n, i in where:
                if i == _ID:
                    ids[n] += 1
                else:
                    found[n].add(i)


def hits_in(
    data: bytes, hex_ids: Collection[bytes], needles: Sequence[bytes], *, block: int = BLOCK
) -> FileHits:
    """The scan of one file's bytes for one set (no I/O)."""
    return Search([NeedleSet(hex_ids, needles)], block=block).hits(data)[0]


def _hyphenate(hex_id: bytes) -> bytes:
    h = hex_id
    return b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:32]))


def _child() -> None:
    """Read the request (JSON) on stdin, write the hits per file and set (JSON) on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    sys.path.append(request["library"])
    search = Search(
        [
            NeedleSet(
                [h.encode("ascii") for h in s["hex_ids"]],
                [base64.b64decode(n) for n in s["needles"]],
            )
            for s in request["sets"]
        ]
    )
    out: dict[str, list[dict[str, object]]] = {}
    for name in request["files"]:
        try:
            hits = _hits_of_file(search, name)
        except FileNotFoundError:  # a WAL not made yet, or removed by the last connection
            continue
        out[name] = [{"ids": h.ids, "needles": list(h.needles)} for h in hits]
    sys.stdout.write(json.dumps({"files": out}))


def _hits_of_file(search: Search, name: str) -> list[FileHits]:
    with open(name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:  # mmap refuses an empty file
            return search.hits(b"")
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            return search.hits(mapped)


if __name__ == "__main__":
    _child()
