"""Pure rules of exports: where each item goes in the package, and when a link expires."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Final

from tutela.core.errors import Conflict, Gone
from tutela.exports.models import ExportState

EXTENSIONS: Final = {
    "audio/wav": "wav",
    "audio/ogg": "ogg",
    "video/mp4": "mp4",
    "image/jpeg": "jpg",
    "application/json": "json",
    "text/plain": "txt",
}
FORMAT: Final = "tutela-export/1"
OPEN_STATES: Final = (ExportState.QUEUED, ExportState.PACKAGING)
_CSV_FORMULA: Final = ("=", "+", "-", "@", "\t", "\r")


def stamp(at: datetime) -> str:
    """A capture time as it appears in file names: 20261207T224635Z."""
    return at.strftime("%Y%m%dT%H%M%SZ")


def media_path(kind: str, captured_at: datetime, item_id: uuid.UUID, media_type: str) -> str:
    """`media/<kind>/<captured>_<id>.<ext>`: sorted by time within a kind, unique by id."""
    ext = EXTENSIONS.get(media_type, "bin")
    return f"media/{kind}/{stamp(captured_at)}_{item_id}.{ext}"


def blob_key(household_id: uuid.UUID, profile_id: uuid.UUID, package_id: uuid.UUID) -> str:
    """Under the profile's prefix: a profile's erasure deletes its packages with its media."""
    return f"{household_id}/{profile_id}/exports/{package_id}"


def package_aad(household_id: uuid.UUID, package_id: uuid.UUID) -> bytes:
    return b"tutela:export:" + household_id.bytes + package_id.bytes


def expires_at(ready_at: datetime, *, link_days: float) -> datetime:
    return ready_at + timedelta(days=link_days)


def check_downloadable(state: str, expires: datetime | None, *, now: datetime) -> None:
    """A package is served only while ready and before its link expires."""
    if state == ExportState.EXPIRED or (
        state == ExportState.READY and expires is not None and now >= expires
    ):
        raise Gone("This download link has expired; ask for a new copy.", code="export_expired")
    if state != ExportState.READY:
        raise Conflict(
            "This copy is not ready yet." if state in OPEN_STATES else "This copy failed.",
            code="export_not_ready",
        )


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula (OWASP CSV injection);
    the JSON files keep every value exactly."""
    return "'" + value if value.startswith(_CSV_FORMULA) else value


def shown_state(state: str, expires: datetime | None, *, now: datetime) -> str:
    """A ready export whose link has passed its time is expired, whether or not a worker
    has erased its package yet."""
    if state == ExportState.READY and expires is not None and now >= expires:
        return ExportState.EXPIRED
    return state
