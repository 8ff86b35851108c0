"""Pure rules of the vault: which media each kind takes, sniffing, ranges, timestamps,
ephemeral voice and what training may never use (C11)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta

from tutela.core.errors import InvalidInput, RangeNotSatisfiable, UnsupportedMedia
from tutela.households.models import ProfileKind
from tutela.vault.models import ItemKind, ItemState, MediaItem

# What each uploaded kind accepts, by declared media type.
MEDIA_TYPES: dict[ItemKind, frozenset[str]] = {
    ItemKind.VOICE: frozenset(
        {"audio/wav", "audio/x-wav", "audio/wave", "audio/ogg", "audio/opus"}
    ),
    ItemKind.VIDEO: frozenset({"video/mp4"}),
    ItemKind.SNAPSHOT: frozenset({"image/jpeg"}),
    ItemKind.THUMBNAIL: frozenset({"image/jpeg"}),
}
# Which device kinds may upload which item kinds.
DEVICE_KINDS: dict[ItemKind, frozenset[str]] = {
    ItemKind.VOICE: frozenset({"voice", "phone", "camera"}),
    ItemKind.VIDEO: frozenset({"camera", "phone"}),
    ItemKind.SNAPSHOT: frozenset({"camera", "phone"}),
    ItemKind.THUMBNAIL: frozenset({"camera", "phone"}),
    ItemKind.LOCATION: frozenset({"phone"}),
    ItemKind.TRANSCRIPT: frozenset({"voice", "phone"}),
}
SNIFF_BYTES = 64


def canonical_media_type(declared: str) -> str:
    """`audio/x-wav; charset=…` → `audio/wav`: parameters dropped, aliases folded."""
    base = declared.split(";", 1)[0].strip().lower()
    return {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/opus": "audio/ogg"}.get(
        base, base
    )


def check_upload_kind(kind: str, declared_type: str, device_kind: str) -> tuple[ItemKind, str]:
    try:
        item_kind = ItemKind(kind)
    except ValueError as exc:
        raise InvalidInput("Unknown item kind.", code="invalid_item_kind") from exc
    if item_kind not in MEDIA_TYPES:
        raise InvalidInput("That kind is not uploaded as media.", code="invalid_item_kind")
    if device_kind not in DEVICE_KINDS[item_kind]:
        raise InvalidInput(
            f"A {device_kind} device cannot upload {item_kind} items.", code="kind_not_for_device"
        )
    base = declared_type.split(";", 1)[0].strip().lower()
    if base not in MEDIA_TYPES[item_kind]:
        raise UnsupportedMedia(
            f"{item_kind} items take {', '.join(sorted(MEDIA_TYPES[item_kind]))}.",
            code="unsupported_media_type",
        )
    return item_kind, canonical_media_type(base)


def check_ephemeral(item_kind: ItemKind, ephemeral: bool) -> None:
    """Only a voice recording can be used in place of typed words and not kept (C11)."""
    if ephemeral and item_kind is not ItemKind.VOICE:
        raise InvalidInput(
            "Only voice recordings can be marked as used in place of typed words.",
            code="ephemeral_voice_only",
        )


def trainable(item: MediaItem) -> bool:
    """Whether the item itself may ever be admitted to a training set (DESIGN idea 3).

    Never an ephemeral item (C11: a voice used only in place of typed words, and its
    transcript, are never used for training or identification), never a child's, never
    one under erasure. The training gate asks this first and no consent overrides it;
    True says only that the item does not rule itself out (the gate still checks the
    subject's consent and the item's access history).
    """
    return (
        not item.ephemeral
        and item.subject_class != ProfileKind.CHILD
        and item.state == ItemState.ACTIVE
    )


def sniff(head: bytes) -> str | None:
    """The media type the first bytes show, or None when they show none Tutela accepts."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if len(head) >= 36 and head[:4] == b"OggS" and b"OpusHead" in head[28:64]:
        return "audio/ogg"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/mp4"
    if len(head) >= 3 and head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    return None


def check_sniffed(head: bytes, media_type: str) -> None:
    found = sniff(head)
    if found != media_type:
        raise UnsupportedMedia(
            "The file's content does not match its declared type.", code="media_type_mismatch"
        )


def check_captured_at(captured_at: datetime, *, now: datetime, max_skew: timedelta) -> datetime:
    if captured_at.tzinfo is None:
        raise InvalidInput("Timestamps need a time zone.", code="naive_timestamp")
    if captured_at > now + max_skew:
        raise InvalidInput("The capture time is in the future.", code="timestamp_in_future")
    return captured_at


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range of RFC 9110 §14.2 as [start, end); None for the whole body.

    Several ranges in one request are answered with the whole body, as the RFC allows.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise RangeNotSatisfiable("The range is malformed.")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable("The range is empty.")
            return max(0, size - suffix), size
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    except ValueError as exc:
        raise RangeNotSatisfiable("The range is malformed.") from exc
    if start < 0 or start >= size or end <= start:
        raise RangeNotSatisfiable("The range lies outside the content.")
    return start, end


def encode_cursor(captured_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([captured_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; anything that is not one of ours is a 422, never a 500."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (
            isinstance(data, list) and len(data) == 2 and all(isinstance(v, str) for v in data)
        ):
            raise ValueError("not a cursor")
        parsed = datetime.fromisoformat(data[0])
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(data[1])
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidInput("The page cursor is not valid.", code="invalid_cursor") from exc
