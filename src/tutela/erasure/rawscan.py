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
(about 10 ms: `python -I -S` runs this file by path, and it imports only the standard
library) per check, against a scan that reads the whole files anyway.

What counts as a hit, in each file given (a database file and its `-wal`):
- an erased id as SQLite keeps a UUID, 32 hex digits, found within runs of hex digits
  (a row's UUID columns lie side by side, so a run is whole ids back to back);
- an erased id in its hyphenated form (blob keys hold it);
- any of the byte needles (samples of the subject's ciphertexts: sealed fields, MACs,
  wrapped keys), once per needle and file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Collection, Iterable, Sequence, Set
from pathlib import Path

_HEX32 = re.compile(rb"[0-9a-f]{32,}")
_HYPHENATED = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Up to this many ids, each hyphenated form is one `find`; beyond it one pass of a regex.
_FIND_EACH_BELOW = 64


class RawScanFailed(RuntimeError):
    """The scanning process did not finish (it crashed, or outlived its time limit)."""


class FileHits:
    """What the scan found in one file: occurrences of erased ids, and which needles."""

    __slots__ = ("ids", "needles")

    def __init__(self, ids: int, needles: Sequence[int]) -> None:
        self.ids = ids
        self.needles = tuple(needles)

    @property
    def count(self) -> int:
        return self.ids + len(self.needles)

    def __repr__(self) -> str:
        return f"FileHits(ids={self.ids}, needles={self.needles})"


def scan(
    paths: Iterable[Path],
    *,
    hex_ids: Collection[bytes] = (),
    needles: Sequence[bytes] = (),
    timeout: float | None = None,
) -> dict[Path, FileHits]:
    """Scan `paths` in a child process; files that do not exist are left out.

    `hex_ids` are UUIDs as 32 lowercase hex digits; `needles` are any bytes. Raises
    `RawScanFailed` if the child fails or takes longer than `timeout` seconds.
    """
    import subprocess  # noqa: PLC0415 (the child never needs it)

    files = [str(p) for p in paths]
    request = {
        "files": files,
        "hex_ids": sorted(h.decode("ascii") for h in hex_ids),
        "needles": [base64.b64encode(n).decode("ascii") for n in needles],
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
        raise RawScanFailed(f"the raw scan's process exited with status {done.returncode}")
    found = json.loads(done.stdout)["files"]
    return {
        Path(name): FileHits(hits["ids"], hits["needles"])
        for name, hits in found.items()
        if name in files
    }


def hits_in(data: bytes, hex_ids: Set[bytes], needles: Sequence[bytes]) -> FileHits:
    """The scan of one file's bytes (no I/O: the child's work, and testable alone)."""
    ids = 0
    if hex_ids:
        for match in _HEX32.finditer(data):
            ids += _hits_in_run(match.group(), hex_ids)
        if len(hex_ids) < _FIND_EACH_BELOW:
            ids += sum(1 for h in hex_ids if data.find(_hyphenate(h)) != -1)
        else:
            ids += sum(
                1 for m in _HYPHENATED.finditer(data) if m.group().replace(b"-", b"") in hex_ids
            )
    found = [i for i, needle in enumerate(needles) if needle and data.find(needle) != -1]
    return FileHits(ids, found)


def _hits_in_run(run: bytes, hex_ids: Set[bytes]) -> int:
    """Ids in a run of hex digits. SQLite writes a row's UUID columns side by side, so a
    run is whole ids back to back, perhaps after or before a stray hex-looking byte of a
    record header or a neighbouring value: look at 32-digit windows aligned to the run's
    start and to its end (exhaustively in short runs)."""
    size = len(run)
    if size <= 96:
        offsets: range | set[int] = range(size - 31)
    else:
        offsets = set(range(0, size - 31, 32)) | set(range(size - 32, -1, -32))
    return sum(1 for o in offsets if run[o : o + 32] in hex_ids)


def _hyphenate(hex_id: bytes) -> bytes:
    h = hex_id
    return b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:32]))


def _child() -> None:
    """Read the request (JSON) on stdin, write the hits per file (JSON) on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    hex_ids = frozenset(h.encode("ascii") for h in request["hex_ids"])
    needles = [base64.b64decode(n) for n in request["needles"]]
    out: dict[str, dict[str, object]] = {}
    for name in request["files"]:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # a WAL not made yet, or removed by the last connection
            continue
        hits = hits_in(data, hex_ids, needles)
        out[name] = {"ids": hits.ids, "needles": list(hits.needles)}
    sys.stdout.write(json.dumps({"files": out}))


if __name__ == "__main__":
    _child()
