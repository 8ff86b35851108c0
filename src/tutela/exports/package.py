"""The export package: a zip written as a stream, one piece at a time (C6).

`zipfile` writes to an unseekable sink here, so every entry carries a data descriptor
and ZIP64 sizes: nothing is sought back, and the zip never sits whole in memory. What an
entry is given passes through at once; the caller takes the zip's bytes out after each
piece (`PackageWriter.take`) and seals them as they come. Each file's size and SHA-256
are counted as it is written, for the manifest.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

_EARLIEST: Final = (1980, 1, 1, 0, 0, 0)


class _Sink:
    """A write-only file without `tell` or `seek`: zipfile then streams (no seeking back)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Written:
    path: str
    size: int
    sha256: str


class PackageWriter:
    """A zip archive built entry by entry; `file` and `close` yield its bytes as made."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", allowZip64=True)
        self.files: list[Written] = []
        self.bytes_out = 0

    def take(self) -> bytes:
        out = bytes(self._sink.buffer)
        self._sink.buffer.clear()
        self.bytes_out += len(out)
        return out

    def file(
        self,
        path: str,
        pieces: Iterable[bytes],
        *,
        when: datetime | None = None,
        compress: bool = False,
    ) -> Iterator[bytes]:
        """Write one file from `pieces`; yields the zip's bytes; records its size and hash.

        Media are stored as they are (already compressed); text is deflated.
        """
        info = zipfile.ZipInfo(path, date_time=_zip_time(when))
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o600 << 16
        digest = hashlib.sha256()
        size = 0
        with self._zip.open(info, "w", force_zip64=True) as entry:
            for piece in pieces:
                if not piece:
                    continue
                digest.update(piece)
                size += len(piece)
                entry.write(piece)
                if self._sink.buffer:
                    yield self.take()
        self.files.append(Written(path, size, digest.hexdigest()))
        if self._sink.buffer:
            yield self.take()

    def close(self) -> Iterator[bytes]:
        """The central directory: the zip's last bytes."""
        self._zip.close()
        yield self.take()


def _zip_time(when: datetime | None) -> tuple[int, int, int, int, int, int]:
    if when is None:
        return _EARLIEST
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    return max(stamp, _EARLIEST)
