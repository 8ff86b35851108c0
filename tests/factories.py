"""Test data: homes through the real services, and small but valid media files."""

from __future__ import annotations

import io
import math
import struct
import uuid
import wave
from datetime import date, timedelta

from tutela.consent.ledger import Subject
from tutela.consent.models import Channel, Method, ParentalConsent
from tutela.container import Container
from tutela.core.ids import uuid7
from tutela.households import service as households
from tutela.households.models import AccountRole, Device
from tutela.households.service import AdultSpec, ChildSpec, CreatedHome, DeviceSpec, HomeSpec
from tutela.vault.models import ItemKind

PASSWORD = "correct horse battery staple"
_hash_cache: dict[int, str] = {}


def password_hash(container: Container) -> str:
    """argon2id is slow on purpose; one hash serves every account in a test."""
    key = id(container.hasher)
    if key not in _hash_cache:
        _hash_cache[key] = container.hasher.hash(PASSWORD)
    return _hash_cache[key]


def make_home(
    container: Container,
    *,
    tag: str,
    child_name: str = "Lily Marchetti",
    second_adult: bool = False,
    parental_consent: bool = True,
) -> CreatedHome:
    """A home with a parent (guardian of one child), a voice device, a nursery camera, a phone.

    The parent has given verified consent for the child, and granted keeping recordings
    and locations (C3), so its devices' uploads for the child are taken; without
    `parental_consent` the child has no consent at all and every upload is refused.
    """
    adults = [
        AdultSpec(
            "Ana Marchetti", f"ana.{tag}@example.com", password_hash(container), AccountRole.OWNER
        )
    ]
    if second_adult:
        adults.append(
            AdultSpec("Bruno Marchetti", f"bruno.{tag}@example.com", password_hash(container))
        )
    spec = HomeSpec(
        adults=tuple(adults),
        children=(ChildSpec(child_name, date(2019, 3, 14), (f"ana.{tag}@example.com",)),),
        devices=(
            DeviceSpec("voice", "Kitchen speaker"),
            DeviceSpec("camera", "Nursery camera", "nursery"),
            DeviceSpec("phone", "Family phone"),
        ),
    )
    with container.stores.session() as session:
        home = households.create_home(
            session, container.vault.keys, spec=spec, now=container.clock.now()
        )
    if parental_consent:
        for child in home.child_profiles:
            grant_parental_consent(container, home, child=child)
    return home


def device_token(home: CreatedHome, container: Container, kind: str) -> str:
    with container.stores.session() as session:
        for device_id, token in home.device_tokens.items():
            device = session.get(Device, (home.household_id, device_id))
            assert device is not None
            if device.kind == kind:
                return token
    raise LookupError(kind)


def wav_bytes(seconds: float = 1.0, *, rate: int = 8000, pitch: float = 440.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(9000 * math.sin(2 * math.pi * pitch * i / rate)))
                for i in range(frames)
            )
        )
    return buf.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def mp4_bytes(payload: int = 4096) -> bytes:
    """An ISO BMFF file: an `ftyp` box then an `mdat` box (enough to sniff as MP4)."""
    ftyp = struct.pack(">I4s4sI", 24, b"ftyp", b"isom", 512) + b"isomiso2"
    mdat = struct.pack(">I4s", 8 + payload, b"mdat") + bytes(payload)
    return ftyp + mdat


def ogg_opus_bytes() -> bytes:
    """The first Ogg page of an Opus stream: `OggS` header carrying an `OpusHead` packet."""
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    page = b"OggS" + bytes([0, 2]) + bytes(8) + struct.pack("<II", 1, 0) + bytes(4)
    return page + bytes([1, len(head)]) + head + bytes(200)


def past(container: Container, minutes: int = 5) -> str:
    return (container.clock.now() - timedelta(minutes=minutes)).isoformat()


def home_device(container: Container, home: CreatedHome, kind: str) -> Device:
    with container.stores.session() as session:
        for device_id in home.device_tokens:
            device = session.get(Device, (home.household_id, device_id))
            assert device is not None
            if device.kind == kind:
                session.expunge(device)
                return device
    raise LookupError(kind)


def seed_media(
    container: Container,
    home: CreatedHome,
    *,
    profile: uuid.UUID | None = None,
    voices: int = 2,
    clips: int = 1,
    days_ago: int = 1,
) -> dict[str, list[uuid.UUID]]:
    """Items of one profile through the real vault: voice recordings each with a
    transcript, camera clips each with a thumbnail, and one location batch."""
    from tutela.vault import service as vault

    profile_id = profile or home.child_profiles[0]
    voice = home_device(container, home, "voice")
    camera = home_device(container, home, "camera")
    phone = home_device(container, home, "phone")
    now = container.clock.now()
    when = now - timedelta(days=days_ago)
    made: dict[str, list[uuid.UUID]] = {k: [] for k in ItemKind}
    with container.stores.session() as s:
        for n in range(voices):
            item = vault.ingest_media(
                s,
                container.vault,
                consent=container.consent,
                device=voice,
                profile_id=profile_id,
                kind="voice",
                declared_type="audio/wav",
                captured_at=when - timedelta(minutes=n),
                body=wav_bytes(0.2, pitch=300 + n),
                limits=container.limits,
                now=now,
            )
            made["voice"].append(item.id)
            t = vault.ingest_transcript(
                s,
                container.vault,
                consent=container.consent,
                device=voice,
                source_item_id=item.id,
                text=f"please play the dinosaur song number {n}",
                language="en",
                now=now,
            )
            made["transcript"].append(t.id)
        for n in range(clips):
            clip = vault.ingest_media(
                s,
                container.vault,
                consent=container.consent,
                device=camera,
                profile_id=profile_id,
                kind="video",
                declared_type="video/mp4",
                captured_at=when - timedelta(minutes=n),
                body=mp4_bytes(2048 + n),
                limits=container.limits,
                now=now,
            )
            made["video"].append(clip.id)
            thumb = vault.ingest_media(
                s,
                container.vault,
                consent=container.consent,
                device=camera,
                profile_id=profile_id,
                kind="thumbnail",
                declared_type="image/jpeg",
                captured_at=when - timedelta(minutes=n),
                body=jpeg_bytes(),
                limits=container.limits,
                now=now,
                source_item_id=clip.id,
            )
            made["thumbnail"].append(thumb.id)
        loc = vault.ingest_locations(
            s,
            container.vault,
            consent=container.consent,
            device=phone,
            profile_id=profile_id,
            points=[vault.LocationPoint(51.5, -0.12, when)],
            limits=container.limits,
            now=now,
        )
        made["location"].append(loc.id)
    return made


def grant_parental_consent(
    container: Container,
    home: CreatedHome,
    *,
    child: uuid.UUID | None = None,
    purposes: tuple[str, ...] = ("storage", "precise_geolocation"),
) -> uuid.UUID:
    """Record a verified parental consent of the home's first guardian for a child, and
    that guardian's grants of `purposes` resting on it (C3); returns the consent's id.
    Tests of the verification methods themselves go through their API."""
    child_id = child or home.child_profiles[0]
    guardian = next(iter(home.accounts.values()))
    now = container.clock.now()
    ledger = container.consent
    consent_id = uuid7()
    with container.stores.session() as session:
        session.add(
            ParentalConsent(
                household_id=home.household_id,
                id=consent_id,
                child_profile_id=child_id,
                guardian_account_id=guardian,
                method=Method.SIGNED_FORM,
                verified=True,
                notice_version=ledger.catalogue.notice_version,
                at=now,
                evidence_sealed=None,
            )
        )
        session.flush()
        if purposes:
            ledger.record(
                session,
                Subject(home.household_id, child_id, "child"),
                dict.fromkeys(purposes, True),
                actor=f"account:{guardian}",
                channel=Channel.CONSOLE,
                method=Method.SIGNED_FORM,
                notice_version=ledger.catalogue.notice_version,
                now=now,
                guardian_account_id=guardian,
            )
        session.commit()
    return consent_id
