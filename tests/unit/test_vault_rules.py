"""Pure vault rules: media sniffing, kinds per device, capture times, HTTP ranges, cursors."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import jpeg_bytes, mp4_bytes, ogg_opus_bytes, wav_bytes
from tutela.core.errors import InvalidInput, RangeNotSatisfiable, UnsupportedMedia
from tutela.core.ids import uuid7
from tutela.households import rules as household_rules
from tutela.vault import rules

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (wav_bytes(0.1), "audio/wav"),
        (ogg_opus_bytes(), "audio/ogg"),
        (mp4_bytes(), "video/mp4"),
        (jpeg_bytes(), "image/jpeg"),
        (b"OggS" + bytes(60), None),  # Ogg, but not Opus
        (b"RIFF\x00\x00\x00\x00AVI " + bytes(52), None),
        (b"<html>" + bytes(58), None),
    ],
)
def test_sniff_recognises_only_real_media(body: bytes, expected: str | None) -> None:
    assert rules.sniff(body[: rules.SNIFF_BYTES]) == expected


def test_declared_types_are_folded_and_checked_against_kind_and_device() -> None:
    assert rules.check_upload_kind("voice", "audio/x-wav; codecs=1", "voice")[1] == "audio/wav"
    assert rules.check_upload_kind("voice", "audio/opus", "phone")[1] == "audio/ogg"
    with pytest.raises(UnsupportedMedia):
        rules.check_upload_kind("snapshot", "image/png", "camera")
    with pytest.raises(InvalidInput) as info:
        rules.check_upload_kind("video", "video/mp4", "voice")
    assert info.value.code == "kind_not_for_device"
    with pytest.raises(InvalidInput):
        rules.check_upload_kind("transcript", "text/plain", "voice")


def test_capture_time_may_be_slightly_ahead_but_not_far() -> None:
    skew = timedelta(minutes=5)
    assert rules.check_captured_at(NOW + timedelta(minutes=4), now=NOW, max_skew=skew)
    with pytest.raises(InvalidInput):
        rules.check_captured_at(NOW + timedelta(minutes=6), now=NOW, max_skew=skew)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=10-19", (10, 20)),
        ("bytes=90-", (90, 100)),
        ("bytes=90-500", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole body
        ("items=0-5", None),
    ],
)
def test_ranges_follow_rfc_9110(header: str | None, expected: tuple[int, int] | None) -> None:
    assert rules.parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=50-10", "bytes=abc", "bytes=-0", "bytes=5"]
)
def test_unsatisfiable_ranges_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        rules.parse_range(header, 100)


def test_cursors_round_trip_and_garbage_is_refused() -> None:
    item = uuid.uuid4()
    assert rules.decode_cursor(rules.encode_cursor(NOW, item)) == (NOW, item)
    nested = base64.urlsafe_b64encode(b"[" * 5000).decode()
    wrong_types = base64.urlsafe_b64encode(json.dumps([NOW.isoformat(), 5]).encode()).decode()
    for bad in ("", "%%%", "bm90IGpzb24", rules.encode_cursor(NOW, item)[:-3], nested, wrong_types):
        with pytest.raises(InvalidInput):
            rules.decode_cursor(bad)


def test_uuid7_ids_are_version_7_and_ordered_by_time() -> None:
    ids = [uuid7() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    import time

    stamp_ms = uuid7().int >> 80
    assert abs(stamp_ms - time.time() * 1000) < 5_000, "the leading 48 bits are Unix milliseconds"


def test_visibility_is_own_profile_and_guarded_children() -> None:
    me, kid, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seen = household_rules.visible_profiles(own_profile_id=me, guarded_profile_ids={kid})
    assert seen == {me, kid} and other not in seen


@pytest.mark.parametrize(
    ("kind", "zone", "code"),
    [
        ("camera", None, "camera_zone_required"),
        ("camera", "attic", "invalid_camera_zone"),
        ("voice", "kitchen", "zone_not_allowed"),
        ("toaster", None, "invalid_device_kind"),
    ],
)
def test_device_rules(kind: str, zone: str | None, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        household_rules.check_device(kind, zone)
    assert info.value.code == code


def test_emails_are_normalised_and_checked() -> None:
    assert household_rules.check_email("  Ana@Example.COM ") == "ana@example.com"
    for bad in ("ana", "ana@localhost", "a b@example.com", "@example.com"):
        with pytest.raises(InvalidInput):
            household_rules.check_email(bad)
