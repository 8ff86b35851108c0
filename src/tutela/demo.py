"""The synthetic demo population: one documented demo home, then random households.

Every home is made through the households service and every recording, snapshot and
location batch through the vault's ingestion service, exactly as a device would send
them, so the demo exercises the real path: keys per profile and per item, sealed blobs,
audit events. The content is synthetic (tones, drawn pictures, random walks) but real in
form: WAV audio, JPEG images, location points.

Each home has a simulated past: it joined a few months ago and its devices uploaded
their items over the last ~60 days, each item received a few seconds after it was
captured, in order. Everything is therefore in the past, and profiles' `last_active_at`
follows their last upload as it would in production.

The population is fixed by the seed: household `n` draws from its own generator, so a
run with more households keeps the homes of a smaller run and adds to them, and homes
whose accounts already exist are skipped.
"""

from __future__ import annotations

import base64
import io
import math
import random
import sys
import uuid
import wave
from array import array
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache

from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.consent.ledger import ConsentLedger, Subject
from tutela.consent.models import Channel, Method, ParentalConsent
from tutela.consent.purposes import Builtin
from tutela.container import Container
from tutela.core.ids import uuid7
from tutela.households import service as households
from tutela.households.models import AccountRole, CameraZone, Device, DeviceKind, ProfileKind
from tutela.identity.models import Factor
from tutela.vault import service as vault
from tutela.vault.models import ItemKind

# Published on purpose: it signs in to the synthetic demo accounts and nothing else.
DEMO_PASSWORD = "tutela-demo-2026"  # noqa: S105
DEMO_DOMAIN = "demo.tutela.test"
DEMO_OWNER_EMAIL = f"parent@{DEMO_DOMAIN}"
# The demo home has cameras, so both parents, who see its recordings, need a second
# factor (R5): authenticator keys published here and printed by `tutela demo`. Never a
# pattern for real accounts.
DEMO_TOTP_SECRET = "TUTELADEMOTUTELADEMOTUTELADEMO22"  # noqa: S105
DEMO_SECOND_PARENT_EMAIL = f"parent2@{DEMO_DOMAIN}"
DEMO_SECOND_PARENT_TOTP_SECRET = "TUTELADEMOSECONDPARENTTUTELADEMO"  # noqa: S105

HISTORY = timedelta(days=60)
SAMPLE_RATE = 8_000  # telephone quality: audible, and a quarter of the bytes of 16 kHz
MIN_SECONDS, MAX_SECONDS = 1.5, 4.0
SNAPSHOT_SIZE = (320, 180)

# fmt: off
ADULT_NAMES = (
    "Sam", "Jordan", "Priya", "Tomasz", "Aisha", "Lucas", "Mei", "Daniel", "Fatima", "Oliver",
    "Sofia", "Kwame", "Elena", "Mateo", "Hannah", "Ravi", "Chloe", "Yusuf", "Ingrid", "Marcus",
)
CHILD_NAMES = (
    "Mia", "Theo", "Ava", "Noah", "Zara", "Leo", "Amara", "Finn", "Isla", "Kai", "Nora", "Omar",
    "Ruby", "Ezra", "Lila", "Hugo", "Maya", "Arlo", "Iris", "Sami",
)
SURNAMES = (
    "Rivera", "Okafor", "Nowak", "Haddad", "Lindqvist", "Tanaka", "Moreau", "Patel", "O'Brien",
    "Schmidt", "Mensah", "Costa", "Kowalski", "Nguyen", "Fischer", "Ahmed",
)
# fmt: on
# Home towns for location tracks: (latitude, longitude) of a town centre.
TOWNS = (
    (53.7997, -1.5492),  # Leeds
    (45.7640, 4.8357),  # Lyon
    (30.2672, -97.7431),  # Austin
    (43.6532, -79.3832),  # Toronto
    (-37.8136, 144.9631),  # Melbourne
    (18.5204, 73.8567),  # Pune
    (51.8985, -8.4756),  # Cork
    (45.5152, -122.6784),  # Portland
    (52.2297, 21.0122),  # Warsaw
    (59.3293, 18.0686),  # Stockholm
)
# Relative weight of each hour of the day (UTC stands in for local time).
HOURS = (1, 1, 1, 1, 1, 2, 5, 9, 8, 5, 4, 4, 5, 4, 4, 6, 8, 9, 10, 9, 8, 6, 3, 2)
SPEAKER_ROOMS = ("Kitchen", "Living room", "Bedroom", "Office", "Playroom", "Hallway")
# Zones where a camera mostly sees the children, when there are any.
CHILDRENS_ZONES = frozenset({CameraZone.NURSERY, CameraZone.PLAYROOM, CameraZone.BEDROOM})

ADULT_LINES = (
    "set a timer for {minutes} minutes",
    "what's the weather in {city} tomorrow",
    "add {grocery} to the shopping list",
    "remind me to call {relative} at {hour} o'clock",
    "play {album} in the kitchen",
    "turn off the lights in the {room}",
    "what's on my calendar today",
    "how long will it take to drive to {place}",
    "set an alarm for {hour} thirty tomorrow",
    "turn the heating up to {temperature} degrees",
    "read me the news",
    "how many grams are in a cup of flour",
    "call {relative}",
    "what time does the pharmacy close",
    "show me the porch camera",
    "lower the volume",
)
CHILD_LINES = (
    "play the dinosaur song",
    "tell me a joke",
    "how far away is the moon",
    "what sound does a {animal} make",
    "play {song}",
    "can you count to {count}",
    "what is {a} plus {b}",
    "tell me a story about a {animal}",
    "how do you spell {word}",
    "set a timer for {minutes} minutes for my homework",
    "is it going to snow today",
    "what's the biggest dinosaur ever",
    "turn on the night light",
    "goodnight",
    "why is the sky blue",
    "play the {animal} game",
)
SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("Leeds", "Lyon", "Toronto", "Cork", "Warsaw", "the city"),
    "grocery": ("milk", "eggs", "bananas", "rice", "dish soap", "oat milk", "bread", "apples"),
    "relative": ("grandma", "grandpa", "auntie Rose", "uncle Ben", "the dentist"),
    "album": ("some jazz", "the morning playlist", "classical music", "the radio"),
    "room": ("living room", "hallway", "kids' room", "garage", "bathroom"),
    "place": ("school", "the airport", "grandma's house", "the office", "the swimming pool"),
    "animal": ("dinosaur", "cow", "lion", "owl", "whale", "penguin", "dragon", "cat"),
    "song": ("the dinosaur song", "baby shark", "the alphabet song", "twinkle twinkle"),
    "word": ("elephant", "because", "beautiful", "dinosaur", "necessary"),
}

ZONE_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    CameraZone.PORCH: ((150, 190, 230), (120, 110, 95)),
    CameraZone.GARDEN: ((135, 200, 240), (70, 140, 60)),
    CameraZone.DRIVEWAY: ((160, 190, 220), (105, 105, 110)),
    CameraZone.GARAGE: ((95, 95, 100), (60, 60, 65)),
    CameraZone.HALLWAY: ((215, 200, 175), (140, 110, 80)),
    CameraZone.LIVING_ROOM: ((230, 215, 190), (150, 95, 60)),
    CameraZone.KITCHEN: ((235, 235, 225), (170, 160, 140)),
    CameraZone.PLAYROOM: ((250, 220, 150), (120, 170, 220)),
    CameraZone.BEDROOM: ((200, 190, 220), (110, 95, 130)),
    CameraZone.NURSERY: ((245, 215, 225), (180, 210, 190)),
    CameraZone.BATHROOM: ((220, 235, 240), (170, 190, 200)),
}


@dataclass(frozen=True)
class Person:
    """Someone a home's devices record: an adult (with an account) or a child."""

    age: int | None = None  # None for adults

    @property
    def is_child(self) -> bool:
        return self.age is not None


@dataclass(frozen=True)
class VoiceClip:
    at: datetime
    device: int  # index into the home's devices
    speaker: int  # index into the home's people
    text: str


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    device: int
    subject: int
    zone: str
    label: str


@dataclass(frozen=True)
class Track:
    at: datetime
    device: int
    subject: int
    points: tuple[vault.LocationPoint, ...]


@dataclass
class HomePlan:
    """A home to create and the history its devices will upload."""

    spec: households.HomeSpec
    people: list[Person]  # adults in spec order, then children in spec order
    phone_owners: dict[int, int]  # device index -> index of the person carrying it
    joined_at: datetime
    uploads: list[VoiceClip | Snapshot | Track] = field(default_factory=list)


@dataclass
class Tally:
    homes: int = 0
    skipped: int = 0
    voice: int = 0
    transcripts: int = 0
    snapshots: int = 0
    locations: int = 0

    @property
    def items(self) -> int:
        return self.voice + self.transcripts + self.snapshots + self.locations


def demo_exists(container: Container) -> bool:
    """Whether the documented demo home is there (its owner's account exists)."""
    with container.stores.session() as session:
        owner = households.find_account(
            session, container.vault.keys, email=DEMO_OWNER_EMAIL, now=container.clock.now()
        )
    return owner is not None


def build_demo(container: Container, *, households: int, seed: int) -> None:
    """Create the demo home and `households - 1` random ones, with their history."""
    now = container.clock.now()
    # argon2id is slow on purpose (19 MiB, 2 passes per hash): hashing once and giving
    # every demo account the same hash string (same salt) keeps 1,000 homes in minutes.
    # Acceptable only because these are throwaway demo accounts with a published password.
    password_hash = container.hasher.hash(DEMO_PASSWORD)
    voices = VoiceBank(random.Random(f"tutela-demo:{seed}:voices"))
    tally = Tally()
    console = Console()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Demo homes", total=households)
        for index in range(households):
            rng = random.Random(f"tutela-demo:{seed}:home:{index}")
            plan = (
                _documented_home(rng, password_hash=password_hash, now=now)
                if index == 0
                else _random_home(rng, index=index, password_hash=password_hash, now=now)
            )
            with container.stores.session() as session:
                if _already_there(session, container, plan, now=now):
                    tally.skipped += 1
                else:
                    _plan_history(rng, plan, documented=index == 0, now=now)
                    _create(session, container, plan, voices=voices, rng=rng, tally=tally)
                    if index == 0:
                        for email, secret in (
                            (DEMO_OWNER_EMAIL, DEMO_TOTP_SECRET),
                            (DEMO_SECOND_PARENT_EMAIL, DEMO_SECOND_PARENT_TOTP_SECRET),
                        ):
                            _enrol_demo_totp(
                                session, container, email=email, secret=secret, now=now
                            )
                    tally.homes += 1
            progress.advance(task)
    console.print(
        f"{tally.homes} homes created"
        + (f" ({tally.skipped} already there)" if tally.skipped else "")
        + f": {tally.items} items, {tally.voice} voice recordings with "
        f"{tally.transcripts} transcripts, {tally.snapshots} snapshots, "
        f"{tally.locations} location batches."
    )


def _enrol_demo_totp(
    session: Session, container: Container, *, email: str, secret: str, now: datetime
) -> None:
    """Give a demo parent its published authenticator key, confirmed."""
    from tutela.identity import factors  # noqa: PLC0415
    from tutela.identity.owners import Owner  # noqa: PLC0415

    account = households.find_account(session, container.vault.keys, email=email, now=now)
    assert account is not None
    owner = Owner.account(account.household_id, account.id, account.profile_id)
    enrolment = factors.begin_totp(
        session,
        container.vault.keys,
        owner,
        label="Demo authenticator",
        account_name=email,
        now=now,
        secret=base64.b32decode(secret),
    )
    factor = session.get(Factor, enrolment.factor_id)
    assert factor is not None
    factor.confirmed_at = now
    session.commit()


# -- the homes ------------------------------------------------------------------------


def _birth_date(today: date, rng: random.Random, *, years: int) -> date:
    return today - timedelta(days=years * 365 + rng.randint(30, 300))


def _documented_home(rng: random.Random, *, password_hash: str, now: datetime) -> HomePlan:
    """The home the README and the CLI describe: two parents, a 6- and an 11-year-old."""
    joined_at = now - HISTORY - timedelta(days=30, hours=9)
    guardians = (DEMO_OWNER_EMAIL, DEMO_SECOND_PARENT_EMAIL)
    spec = households.HomeSpec(
        adults=(
            households.AdultSpec(
                name="Sam Rivera",
                email=DEMO_OWNER_EMAIL,
                password_hash=password_hash,
                role=AccountRole.OWNER,
            ),
            households.AdultSpec(
                name="Jordan Rivera", email=DEMO_SECOND_PARENT_EMAIL, password_hash=password_hash
            ),
        ),
        children=(
            households.ChildSpec(
                name="Mia Rivera",
                birth_date=_birth_date(now.date(), rng, years=6),
                guardian_emails=guardians,
            ),
            households.ChildSpec(
                name="Theo Rivera",
                birth_date=_birth_date(now.date(), rng, years=11),
                guardian_emails=guardians,
            ),
        ),
        # Labels are stored in plain text, so they name rooms and roles, never people.
        devices=(
            households.DeviceSpec(kind=DeviceKind.VOICE, label="Kitchen speaker"),
            households.DeviceSpec(
                kind=DeviceKind.CAMERA, label="Nursery camera", zone=CameraZone.NURSERY
            ),
            households.DeviceSpec(
                kind=DeviceKind.CAMERA, label="Bedroom camera", zone=CameraZone.BEDROOM
            ),
            households.DeviceSpec(
                kind=DeviceKind.CAMERA, label="Playroom camera", zone=CameraZone.PLAYROOM
            ),
            households.DeviceSpec(
                kind=DeviceKind.CAMERA, label="Living room camera", zone=CameraZone.LIVING_ROOM
            ),
            households.DeviceSpec(
                kind=DeviceKind.CAMERA, label="Porch camera", zone=CameraZone.PORCH
            ),
            households.DeviceSpec(kind=DeviceKind.PHONE, label="Parent phone 1"),
            households.DeviceSpec(kind=DeviceKind.PHONE, label="Parent phone 2"),
        ),
    )
    people = [Person(), Person(), Person(age=6), Person(age=11)]
    phones = [i for i, device in enumerate(spec.devices) if device.kind == DeviceKind.PHONE]
    owners = dict(zip(phones, (0, 1), strict=True))  # a phone for each parent
    return HomePlan(spec=spec, people=people, phone_owners=owners, joined_at=joined_at)


def _random_home(rng: random.Random, *, index: int, password_hash: str, now: datetime) -> HomePlan:
    joined_at = now - HISTORY - timedelta(days=rng.uniform(2, 300))
    surname = rng.choice(SURNAMES)
    adult_count = 2 if rng.random() < 0.65 else 1
    adults = tuple(
        households.AdultSpec(
            name=f"{rng.choice(ADULT_NAMES)} {surname}",
            email=f"adult{n}.hh{index}@{DEMO_DOMAIN}",
            password_hash=password_hash,
            role=AccountRole.OWNER if n == 1 else AccountRole.MEMBER,
        )
        for n in range(1, adult_count + 1)
    )
    emails = tuple(a.email for a in adults)
    children: list[households.ChildSpec] = []
    people = [Person() for _ in adults]
    for first in rng.sample(CHILD_NAMES, rng.choices((0, 1, 2, 3), (30, 30, 28, 12))[0]):
        # Ages count from the day the home joined, so even a baby is born by then.
        days = rng.randint(60, 17 * 365)
        guardians = emails if len(emails) == 1 or rng.random() < 0.85 else emails[:1]
        children.append(
            households.ChildSpec(
                name=f"{first} {surname}",
                birth_date=joined_at.date() - timedelta(days=days),
                guardian_emails=guardians,
            )
        )
        people.append(Person(age=(days + (now - joined_at).days) // 365))
    devices = [
        households.DeviceSpec(kind=DeviceKind.VOICE, label=f"{room} speaker")
        for room in rng.sample(SPEAKER_ROOMS, rng.randint(1, 3))
    ]
    for zone in rng.sample(list(CameraZone), rng.randint(0, 4)):
        label = zone.value.replace("_", " ").capitalize()
        devices.append(
            households.DeviceSpec(kind=DeviceKind.CAMERA, label=f"{label} camera", zone=zone)
        )
    phone_owners: dict[int, int] = {}
    for owner, person in enumerate(people):
        # Most adults carry a phone, and half the children of ten and over.
        chance = 0.5 if (person.age or 0) >= 10 else 0.0 if person.is_child else 0.9
        if rng.random() < chance:
            phone_owners[len(devices)] = owner
            label = f"Phone {len(phone_owners)}"
            devices.append(households.DeviceSpec(kind=DeviceKind.PHONE, label=label))
    spec = households.HomeSpec(adults=adults, children=tuple(children), devices=tuple(devices))
    return HomePlan(spec=spec, people=people, phone_owners=phone_owners, joined_at=joined_at)


def _already_there(
    session: Session, container: Container, plan: HomePlan, *, now: datetime
) -> bool:
    return any(
        households.find_account(session, container.vault.keys, email=adult.email, now=now)
        is not None
        for adult in plan.spec.adults
    )


# -- the history ----------------------------------------------------------------------


def _moment(rng: random.Random, *, now: datetime, margin: timedelta) -> datetime:
    """A time on one of the last `HISTORY` days, at least `margin` ago, mostly awake hours."""
    day = now - timedelta(days=rng.randint(1, HISTORY.days))
    hour = rng.choices(range(24), HOURS)[0]
    at = day.replace(hour=hour, minute=rng.randint(0, 59), second=rng.randint(0, 59))
    return at if at <= now - margin else at - timedelta(days=1)


def _plan_history(rng: random.Random, plan: HomePlan, *, documented: bool, now: datetime) -> None:
    """Pick who said what to which speaker, which camera saw whom, who went where."""
    devices = list(plan.spec.devices)
    speakers = [i for i, d in enumerate(devices) if d.kind == DeviceKind.VOICE]
    cameras = [i for i, d in enumerate(devices) if d.kind == DeviceKind.CAMERA]
    phones = [i for i, d in enumerate(devices) if d.kind == DeviceKind.PHONE]
    children = [i for i, p in enumerate(plan.people) if p.is_child]
    margin = timedelta(hours=3)  # room for a track and its upload, all before now
    if documented:
        # Everyone speaks, the children most: each child has recordings to look at.
        speakers_by_clip = [*children * 5, 0, 0, 0, 0, 1, 1, 1, 1]
        rng.shuffle(speakers_by_clip)
        # Each parent carries a phone; the children's tracks come from a parent's phone
        # with family location sharing (Mia at the park, Theo walking to school).
        track_owners = [(phones[0], 0), (phones[0], 0), (phones[1], 1), (phones[1], 1)]
        track_owners += [(phones[0], children[0]), (phones[1], children[1])]
        shot_cameras = [*cameras, cameras[0]]
    else:
        speakers_by_clip = [rng.randrange(len(plan.people)) for _ in range(rng.randint(3, 8))]
        tracked = [rng.choice(phones) for _ in range(rng.randint(1, 2))] if phones else []
        track_owners = [(phone, plan.phone_owners[phone]) for phone in tracked]
        shot_cameras = [rng.choice(cameras) for _ in range(rng.randint(1, 3))] if cameras else []
    for speaker in speakers_by_clip:
        lines = CHILD_LINES if plan.people[speaker].is_child else ADULT_LINES
        plan.uploads.append(
            VoiceClip(
                at=_moment(rng, now=now, margin=margin),
                device=rng.choice(speakers),
                speaker=speaker,
                text=_fill(rng, rng.choice(lines)),
            )
        )
    for camera in shot_cameras:
        zone = str(devices[camera].zone)
        seen = children if zone in CHILDRENS_ZONES and children else range(len(plan.people))
        plan.uploads.append(
            Snapshot(
                at=_moment(rng, now=now, margin=margin),
                device=camera,
                subject=rng.choice(list(seen)),
                zone=zone,
                label=devices[camera].label,
            )
        )
    home = rng.choice(TOWNS)
    home = (home[0] + rng.uniform(-0.04, 0.04), home[1] + rng.uniform(-0.04, 0.04))
    for phone, subject in track_owners:
        at = _moment(rng, now=now, margin=margin)
        plan.uploads.append(
            Track(at=at, device=phone, subject=subject, points=_walk(rng, home, start=at))
        )
    plan.uploads.sort(key=lambda upload: upload.at)


def _fill(rng: random.Random, template: str) -> str:
    values = {name: rng.choice(choices) for name, choices in SLOTS.items()}
    values.update(
        minutes=str(rng.choice((2, 5, 10, 15, 20, 25, 30, 45))),
        hour=str(rng.randint(1, 12)),
        temperature=str(rng.randint(18, 23)),
        count=str(rng.choice((10, 20, 50, 100))),
        a=str(rng.randint(1, 12)),
        b=str(rng.randint(1, 12)),
    )
    return template.format(**values)


def _walk(
    rng: random.Random, home: tuple[float, float], *, start: datetime
) -> tuple[vault.LocationPoint, ...]:
    """A short random walk from near home: 10–60 points, 15–120 m and 20–90 s apart."""
    lat = home[0] + rng.uniform(-0.002, 0.002)
    lon = home[1] + rng.uniform(-0.002, 0.002)
    heading = rng.uniform(0, 2 * math.pi)
    at = start
    points = []
    for _ in range(rng.randint(10, 60)):
        points.append(
            vault.LocationPoint(
                latitude=round(lat, 6),
                longitude=round(lon, 6),
                captured_at=at,
                accuracy_m=round(rng.uniform(4, 35), 1),
            )
        )
        heading += rng.gauss(0, 0.5)
        metres = rng.uniform(15, 120)
        lat += metres * math.cos(heading) / 111_320
        lon += metres * math.sin(heading) / (111_320 * math.cos(math.radians(lat)))
        at += timedelta(seconds=rng.uniform(20, 90))
    return tuple(points)


# -- uploading it ---------------------------------------------------------------------


def _create(
    session: Session,
    container: Container,
    plan: HomePlan,
    *,
    voices: VoiceBank,
    rng: random.Random,
    tally: Tally,
) -> None:
    """Create the home as it was when it joined, then upload its history in order."""
    created = households.create_home(
        session, container.vault.keys, spec=plan.spec, now=plan.joined_at, commit=True
    )
    _parental_consents(session, container, plan, created)
    profiles = [created.adult_profiles[a.email] for a in plan.spec.adults]
    profiles += created.child_profiles
    # Tokens come back in the order of the spec's devices; each device signs in with its own.
    devices: list[Device] = [
        households.authenticate_device(session, token=token, now=plan.joined_at)
        for token in created.device_tokens.values()
    ]
    limits = container.limits
    for upload in plan.uploads:
        received = upload.at + timedelta(seconds=rng.uniform(2, 20))
        device = devices[upload.device]
        if isinstance(upload, VoiceClip):
            person = plan.people[upload.speaker]
            audio = voices.recording(rng, upload.text, child=person.is_child)
            recording = vault.ingest_media(
                session,
                container.vault,
                consent=container.consent,
                device=device,
                profile_id=profiles[upload.speaker],
                kind=ItemKind.VOICE,
                declared_type="audio/wav",
                captured_at=upload.at,
                body=[audio],
                limits=limits,
                now=received,
            )
            vault.ingest_transcript(
                session,
                container.vault,
                consent=container.consent,
                device=device,
                source_item_id=recording.id,
                text=upload.text,
                language="en",
                now=received + timedelta(seconds=rng.uniform(1, 4)),
            )
            tally.voice += 1
            tally.transcripts += 1
        elif isinstance(upload, Snapshot):
            picture = _snapshot(
                rng,
                zone=upload.zone,
                label=upload.label,
                at=upload.at,
                child=plan.people[upload.subject].is_child,
            )
            vault.ingest_media(
                session,
                container.vault,
                consent=container.consent,
                device=device,
                profile_id=profiles[upload.subject],
                kind=ItemKind.SNAPSHOT,
                declared_type="image/jpeg",
                captured_at=upload.at,
                body=[picture],
                limits=limits,
                now=received,
            )
            tally.snapshots += 1
        else:
            vault.ingest_locations(
                session,
                container.vault,
                consent=container.consent,
                device=device,
                profile_id=profiles[upload.subject],
                points=list(upload.points),
                limits=limits,
                now=upload.points[-1].captured_at + timedelta(seconds=rng.uniform(5, 60)),
            )
            tally.locations += 1


def _parental_consents(
    session: Session, container: Container, plan: HomePlan, created: households.CreatedHome
) -> None:
    """Each child's first guardian consented on a signed form as the home joined: without
    it the ingestion gates would take nothing of the child's (C3)."""
    for child, profile_id in zip(plan.spec.children, created.child_profiles, strict=True):
        signed_form_consent(
            session,
            container.consent,
            household_id=created.household_id,
            child_profile_id=profile_id,
            guardian_account_id=created.accounts[child.guardian_emails[0]],
            at=plan.joined_at,
        )
    session.commit()


def signed_form_consent(
    session: Session,
    ledger: ConsentLedger,
    *,
    household_id: uuid.UUID,
    child_profile_id: uuid.UUID,
    guardian_account_id: uuid.UUID,
    at: datetime,
    purposes: tuple[str, ...] = (Builtin.STORAGE, Builtin.PRECISE_GEOLOCATION),
) -> None:
    """Synthetic data (the demo, the benches): a guardian's verified consent for a child
    on a signed form, with no evidence kept, and their grants of `purposes` resting on it
    (C3), each with its audit record. The caller commits."""
    consent = ParentalConsent(
        household_id=household_id,
        id=uuid7(),
        child_profile_id=child_profile_id,
        guardian_account_id=guardian_account_id,
        method=Method.SIGNED_FORM,
        verified=True,
        notice_version=ledger.catalogue.notice_version,
        at=at,
        evidence_sealed=None,
    )
    session.add(consent)
    session.flush()
    actor = f"account:{guardian_account_id}"
    ledger.record(
        session,
        Subject(household_id, child_profile_id, ProfileKind.CHILD),
        dict.fromkeys(purposes, True),
        actor=actor,
        channel=Channel.CONSOLE,
        method=Method.SIGNED_FORM,
        notice_version=ledger.catalogue.notice_version,
        now=at,
        guardian_account_id=guardian_account_id,
    )
    for purpose in purposes:
        record(
            session,
            tag=AuditTag.CONSENT_GRANTED,
            actor=actor,
            now=at,
            household_id=household_id,
            subject=f"profile:{child_profile_id}:{purpose}",
        )


# -- synthetic media ------------------------------------------------------------------


class VoiceBank:
    """Syllable-like tone glides made once per run; recordings are strung from them.

    Synthesising every sample of every recording in Python would dominate a large run,
    so each recording is a new sequence of pre-made pieces: a wake chime, then one to
    three "syllables" per word of its transcript, children's pitched higher.
    """

    def __init__(self, rng: random.Random, *, size: int = 24) -> None:
        self.adult = [self._syllable(rng, low=95, high=210) for _ in range(size)]
        self.child = [self._syllable(rng, low=240, high=420) for _ in range(size)]
        self.chimes = [self._chime(rng) for _ in range(4)]

    @staticmethod
    def _pcm(samples: list[float]) -> bytes:
        pcm = array("h", (round(s * 32_767) for s in samples))
        if sys.byteorder == "big":  # WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()

    @classmethod
    def _syllable(cls, rng: random.Random, *, low: float, high: float) -> bytes:
        count = int(SAMPLE_RATE * rng.uniform(0.08, 0.24))
        start = rng.uniform(low, high)
        end = start * rng.uniform(0.75, 1.3)
        amplitude = rng.uniform(0.25, 0.45)
        overtones = ((1, 1.0), (2, rng.uniform(0.3, 0.6)), (3, rng.uniform(0.1, 0.3)))
        weight = sum(w for _, w in overtones)
        phase = 0.0
        samples = []
        for i in range(count):
            t = i / count
            phase += 2 * math.pi * (start + (end - start) * t) / SAMPLE_RATE
            tone = sum(w * math.sin(k * phase) for k, w in overtones) / weight
            samples.append(amplitude * math.sin(math.pi * t) * tone)
        return cls._pcm(samples)

    @classmethod
    def _chime(cls, rng: random.Random) -> bytes:
        samples: list[float] = []
        for pitch in rng.sample((523.3, 659.3, 784.0, 880.0, 1046.5), 2):
            count = int(SAMPLE_RATE * 0.14)
            samples.extend(
                0.3 * math.exp(-5 * i / count) * math.sin(2 * math.pi * pitch * i / SAMPLE_RATE)
                for i in range(count)
            )
        return cls._pcm(samples)

    def recording(self, rng: random.Random, text: str, *, child: bool) -> bytes:
        """A mono 16-bit WAV of 1.5–4 s: chime, pause, then the words of `text`."""
        syllables = self.child if child else self.adult
        limit = int(MAX_SECONDS * SAMPLE_RATE) * 2
        frames = bytearray(rng.choice(self.chimes))
        frames += _silence(rng.uniform(0.15, 0.35))
        for word in text.split():
            for _ in range(max(1, min(3, len(word) // 3))):
                frames += rng.choice(syllables) + _silence(rng.uniform(0.01, 0.04))
            frames += _silence(rng.uniform(0.06, 0.18))
            if len(frames) >= limit:
                break
        del frames[limit:]
        frames += _silence(max(0.0, MIN_SECONDS - len(frames) / 2 / SAMPLE_RATE) + 0.2)
        del frames[limit:]
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(bytes(frames))
        return out.getvalue()


def _silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * SAMPLE_RATE)


@cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=13)


def _snapshot(rng: random.Random, *, zone: str, label: str, at: datetime, child: bool) -> bytes:
    """A small JPEG of a room: a gradient, furniture, a figure, the camera's caption."""
    width, height = SNAPSHOT_SIZE
    top, bottom = ZONE_COLOURS.get(zone, ((200, 200, 200), (90, 90, 90)))
    gradient = Image.new("RGB", (1, 2))
    gradient.putpixel((0, 0), top)
    gradient.putpixel((0, 1), bottom)
    image = gradient.resize(SNAPSHOT_SIZE, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    floor = int(height * rng.uniform(0.62, 0.75))
    draw.rectangle((0, floor, width, height), fill=tuple(c * 3 // 4 for c in bottom))
    for _ in range(rng.randint(2, 4)):
        x = rng.randint(0, width - 60)
        w, h = rng.randint(30, 90), rng.randint(20, 70)
        shade = tuple(rng.randint(60, 200) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x, floor - h, x + w, floor + 6), fill=shade, outline=(40, 40, 40))
        else:
            draw.ellipse((x, floor - h, x + w, floor + 6), fill=shade, outline=(40, 40, 40))
    scale = 0.6 if child else 1.0
    x = rng.randint(40, width - 40)
    body = int(70 * scale)
    head = int(18 * scale)
    coat = tuple(rng.randint(40, 220) for _ in range(3))
    draw.rounded_rectangle((x - body // 4, floor - body, x + body // 4, floor), 6, fill=coat)
    draw.ellipse((x - head, floor - body - 2 * head, x + head, floor - body), fill=(225, 190, 160))
    if at.hour >= 21 or at.hour < 6:  # night: the camera switches to infrared
        image = image.convert("L").point(lambda v: v * 3 // 5).convert("RGB")
        draw = ImageDraw.Draw(image)
        label = f"{label} (IR)"
    caption = (label.upper(), at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    for line, y in zip(caption, (6, height - 20), strict=True):
        draw.text((7, y + 1), line, fill=(0, 0, 0), font=_font())
        draw.text((6, y), line, fill=(255, 255, 255), font=_font())
    draw.ellipse((width - 16, 8, width - 8, 16), fill=(220, 30, 30))  # recording light
    out = io.BytesIO()
    image.save(out, "JPEG", quality=72)
    return out.getvalue()
