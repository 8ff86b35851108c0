"""The export package's zip stream and the export rules, without I/O (C6)."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from tutela.core.errors import Conflict, Gone
from tutela.exports import rules
from tutela.exports.package import PackageWriter


def test_the_zip_streams_in_pieces_no_larger_than_what_it_is_given() -> None:
    writer = PackageWriter()
    chunk = bytes(range(256)) * 1024  # 256 KiB
    pieces = list(writer.file("media/video/a.mp4", [chunk] * 24))  # 6 MiB
    pieces += list(writer.file("notes.txt", [b"hello " * 1000], compress=True))
    pieces += list(writer.close())
    # Memory stays at one piece: the zip is never held whole.
    assert max(len(p) for p in pieces) <= len(chunk) + 1024
    data = b"".join(pieces)
    assert writer.bytes_out == len(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.read("media/video/a.mp4") == chunk * 24
    assert archive.getinfo("media/video/a.mp4").compress_type == zipfile.ZIP_STORED
    assert archive.getinfo("notes.txt").compress_type == zipfile.ZIP_DEFLATED
    assert [(f.path, f.size) for f in writer.files] == [
        ("media/video/a.mp4", 24 * len(chunk)),
        ("notes.txt", 6000),
    ]
    assert writer.files[0].sha256 == hashlib.sha256(chunk * 24).hexdigest()


def test_media_paths_sort_by_capture_time_and_keep_the_format() -> None:
    item = uuid.UUID("01a252b6-1777-7393-9b88-ceb85cfcb5c5")
    at = datetime(2026, 12, 7, 22, 46, 35, tzinfo=UTC)
    assert rules.media_path("voice", at, item, "audio/ogg") == (
        f"media/voice/20261207T224635Z_{item}.ogg"
    )
    assert rules.media_path("snapshot", at, item, "image/jpeg").endswith(".jpg")


def test_a_link_is_served_only_while_ready_and_before_it_expires() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    rules.check_downloadable("ready", now + timedelta(seconds=1), now=now)
    with pytest.raises(Gone) as gone:
        rules.check_downloadable("ready", now, now=now)
    assert gone.value.code == "export_expired"
    with pytest.raises(Gone):
        rules.check_downloadable("expired", None, now=now)
    for state in ("queued", "packaging", "failed"):
        with pytest.raises(Conflict) as early:
            rules.check_downloadable(state, None, now=now)
        assert early.value.code == "export_not_ready"
    assert rules.shown_state("ready", now, now=now) == "expired"
    assert rules.shown_state("ready", now + timedelta(days=1), now=now) == "ready"


def test_csv_cells_never_run_as_formulas() -> None:
    assert rules.csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert rules.csv_cell("-2") == "'-2"
    assert rules.csv_cell("play the dinosaur song") == "play the dinosaur song"
