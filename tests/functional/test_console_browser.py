"""The console in Debian's Chromium: sign-in, a child's recordings that play, one household only."""

from __future__ import annotations

import base64
import io
import math
import uuid
import wave
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from tests.browser import (  # noqa: F401 (the browser's fixtures, shared)
    _quick_failures,
    browser_type_launch_args,
    console_settings,
    loopback_listener,
    prepared_app,
    serving,
    virtual_authenticator,
)
from tests.factories import grant_parental_consent
from tests.mailbox import link_in
from tutela.container import Container
from tutela.households import service as households
from tutela.households.models import AccountRole, Device
from tutela.identity import factors
from tutela.identity.models import Factor
from tutela.identity.owners import Owner
from tutela.vault import service as vault

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/tmp/console-profile.png")
PASSWORD = "correct horse battery staple"
SAMPLE_RATE = 16_000
SNAPSHOT_SIZE = (320, 240)


@dataclass(frozen=True)
class Recording:
    item_id: uuid.UUID
    seconds: float
    transcript: str


@dataclass(frozen=True)
class Household:
    """What the signed-in parent should see, and what belongs to the family next door."""

    email: str
    child_id: uuid.UUID
    child_name: str
    recordings: tuple[Recording, ...]
    snapshot_id: uuid.UUID
    other_child_id: uuid.UUID
    other_recording: Recording
    unverified_child_id: uuid.UUID
    """Ana's second child, for whom no parent's consent is verified yet (C3)."""
    unverified_child_name: str = "Mia Child"


def wav_tone(seconds: float, *, hz: float = 440.0) -> bytes:
    """A real 16-bit mono PCM WAV file, as a voice assistant would upload."""
    frames = round(seconds * SAMPLE_RATE)
    samples = array(
        "h", (round(6000 * math.sin(2 * math.pi * hz * i / SAMPLE_RATE)) for i in range(frames))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def jpeg_snapshot() -> bytes:
    image = Image.new("RGB", SNAPSHOT_SIZE, (200, 220, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 60, 140, 200), fill=(240, 180, 60))
    draw.ellipse((180, 50, 280, 150), fill=(90, 160, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _devices(container: Container, home: households.CreatedHome) -> dict[str, Device]:
    with container.stores.session() as session:
        found = [session.get(Device, (home.household_id, d)) for d in home.device_tokens]
        return {d.kind: d for d in found if d is not None}


def _record_voice(
    container: Container,
    *,
    device: Device,
    profile_id: uuid.UUID,
    seconds: float,
    transcript: str,
    captured_at: datetime,
    now: datetime,
) -> Recording:
    with container.stores.session() as session:
        item = vault.ingest_media(
            session,
            container.vault,
            consent=container.consent,
            device=device,
            profile_id=profile_id,
            kind="voice",
            declared_type="audio/wav",
            captured_at=captured_at,
            body=[wav_tone(seconds)],
            limits=container.limits,
            now=now,
        )
        vault.ingest_transcript(
            session,
            container.vault,
            consent=container.consent,
            device=device,
            source_item_id=item.id,
            text=transcript,
            language="en",
            now=now,
        )
        return Recording(item_id=item.id, seconds=seconds, transcript=transcript)


def _build_households(container: Container) -> Household:
    now = container.clock.now()
    password_hash = container.hasher.hash(PASSWORD)
    with container.stores.session() as session:
        ours = households.create_home(
            session,
            container.vault.keys,
            spec=households.HomeSpec(
                adults=(
                    households.AdultSpec(
                        "Ana Parent", "ana@example.com", password_hash, AccountRole.OWNER
                    ),
                ),
                children=(
                    households.ChildSpec("Lily Child", date(2018, 5, 1), ("ana@example.com",)),
                    households.ChildSpec("Mia Child", date(2021, 8, 2), ("ana@example.com",)),
                ),
                devices=(
                    households.DeviceSpec("voice", "Kitchen speaker"),
                    households.DeviceSpec("camera", "Nursery cam", "nursery"),
                ),
            ),
            now=now,
        )
        theirs = households.create_home(
            session,
            container.vault.keys,
            spec=households.HomeSpec(
                adults=(
                    households.AdultSpec(
                        "Bo Neighbour", "bo@example.com", password_hash, AccountRole.OWNER
                    ),
                ),
                children=(
                    households.ChildSpec("Max Neighbour", date(2017, 3, 9), ("bo@example.com",)),
                ),
                devices=(households.DeviceSpec("voice", "Hall speaker"),),
            ),
            now=now,
        )
    grant_parental_consent(container, ours, child=ours.child_profiles[0])
    grant_parental_consent(container, theirs)
    now = container.clock.now()  # this clock runs: the uploads come after the consent
    our_devices, their_devices = _devices(container, ours), _devices(container, theirs)
    child = ours.child_profiles[0]
    recordings = tuple(
        _record_voice(
            container,
            device=our_devices["voice"],
            profile_id=child,
            seconds=seconds,
            transcript=transcript,
            captured_at=now - timedelta(hours=hours_ago),
            now=now,
        )
        for seconds, transcript, hours_ago in (
            (2.0, "Play the dinosaur song", 3),
            (2.5, "What do whales eat for breakfast", 2),
        )
    )
    with container.stores.session() as session:
        snapshot = vault.ingest_media(
            session,
            container.vault,
            consent=container.consent,
            device=our_devices["camera"],
            profile_id=child,
            kind="snapshot",
            declared_type="image/jpeg",
            captured_at=now - timedelta(minutes=30),
            body=[jpeg_snapshot()],
            limits=container.limits,
            now=now,
        )
    other = _record_voice(
        container,
        device=their_devices["voice"],
        profile_id=theirs.child_profiles[0],
        seconds=2.0,
        transcript="The neighbours' secret birthday plan",
        captured_at=now - timedelta(hours=1),
        now=now,
    )
    _add_cy_with_an_authenticator(container)
    return Household(
        email="ana@example.com",
        child_id=child,
        child_name="Lily Child",
        recordings=recordings,
        snapshot_id=snapshot.id,
        other_child_id=theirs.child_profiles[0],
        other_recording=other,
        unverified_child_id=ours.child_profiles[1],
    )


CY_EMAIL = "cy@example.com"
CY_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
DEE_EMAIL = "dee@example.com"
DEE_TOTP = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA"


def _add_cy_with_an_authenticator(container: Container) -> None:
    _add_home_with_an_authenticator(container, CY_EMAIL, CY_TOTP, "Cy Parent")
    _add_home_with_an_authenticator(container, DEE_EMAIL, DEE_TOTP, "Dee Parent")


def _add_home_with_an_authenticator(
    container: Container, email: str, secret: str, name: str
) -> None:
    """A home whose adult has an authenticator app (TOTP, RFC 6238) enrolled."""
    now = container.clock.now()
    with container.stores.session() as session:
        created = households.create_home(
            session,
            container.vault.keys,
            spec=households.HomeSpec(
                adults=(
                    households.AdultSpec(
                        name, email, container.hasher.hash(PASSWORD), AccountRole.OWNER
                    ),
                ),
            ),
            now=now,
        )
        account = households.find_account(session, container.vault.keys, email=email, now=now)
        assert account is not None
        owner = Owner.account(created.household_id, account.id, account.profile_id)
        enrolment = factors.begin_totp(
            session,
            container.vault.keys,
            owner,
            label="Phone",
            account_name=email,
            now=now,
            secret=base64.b32decode(secret),
        )
        factor = session.get(Factor, enrolment.factor_id)
        assert factor is not None
        factor.confirmed_at = now
        session.commit()


@pytest.fixture(scope="session")
def console_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Household]]:
    """The app on a free loopback port, over a fresh home folder holding two households."""
    home = tmp_path_factory.mktemp("tutela-home")
    listener, origin = loopback_listener()
    settings = console_settings(
        home,
        origin,
        # Ana owns a camera; most tests here sign her in with a password alone. The second
        # factor is shown with Cy, who enrolled one (R5 itself: test_sign_in_api.py).
        mfa_required_for_camera_viewers=False,
    )
    MAIL[:] = [settings.mail_path]
    app = prepared_app(settings)
    household = _build_households(app.state.container)
    with serving(app, listener):
        yield origin, household


@pytest.fixture(scope="session")
def base_url(console_app: tuple[str, Household]) -> str:
    return console_app[0]


@pytest.fixture(scope="session")
def household(console_app: tuple[str, Household]) -> Household:
    return console_app[1]


MAIL: list[Path] = []  # the served home's mail folder, set by `console_app`


def sign_in(page: Page, email: str, password: str) -> None:
    """The form; from a browser Tutela has not seen, an account without a second factor
    is sent a link (R6), which is opened in the same browser, as its holder would."""
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    # Exactly: the page also offers "Sign in with a passkey".
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_load_state()
    if page.get_by_role("heading", name="Check your email").count():
        token = link_in(MAIL[0], email, wait_seconds=5)
        page.goto(f"/login/link#{token}")
        page.get_by_role("button", name="Sign in", exact=True).click()


@pytest.fixture(scope="session")
def parent_cookie(base_url: str, household: Household) -> dict[str, Any]:
    """One console session for the tests that start signed in; the form has its own tests."""
    with httpx.Client(base_url=base_url) as client:
        client.get("/login")
        answer = client.post(
            "/login",
            data={
                "email": household.email,
                "password": PASSWORD,
                "csrf": client.cookies["tutela_csrf"],
            },
        )
        assert answer.status_code == 202  # a new device: the emailed link (R6)
        answer = client.post(
            "/login/link", data={"token": link_in(MAIL[0], household.email, wait_seconds=5)}
        )
        assert answer.status_code == 303
        token = answer.cookies["tutela_session"]
    return {"name": "tutela_session", "value": token, "url": base_url}


def open_child_page(
    page: Page, base_url: str, household: Household, cookie: dict[str, Any]
) -> None:
    page.context.add_cookies([cookie])
    page.goto("/")
    page.get_by_role("link", name=household.child_name).click()
    expect(page).to_have_url(f"{base_url}/profiles/{household.child_id}")


def test_a_parent_signs_in_and_sees_the_child(
    page: Page, base_url: str, household: Household
) -> None:
    sign_in(page, household.email, PASSWORD)

    expect(page).to_have_url(f"{base_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your household")
    expect(page.get_by_role("link", name=household.child_name)).to_be_visible()
    expect(page.get_by_text("Max Neighbour")).to_have_count(0)


def test_a_wrong_password_is_refused_without_a_session(
    page: Page, base_url: str, household: Household
) -> None:
    sign_in(page, household.email, "not the password")

    expect(page.get_by_role("alert")).to_have_text("The email or password is not right.")
    assert "tutela_session" not in {c["name"] for c in page.context.cookies()}
    page.goto("/")
    expect(page).to_have_url(f"{base_url}/login")


def test_the_childs_recordings_play_with_their_transcripts(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)
    expect(page.get_by_role("heading", level=1)).to_contain_text(household.child_name)

    for recording in household.recordings:
        item = page.locator(f'[data-item-id="{recording.item_id}"]')
        expect(item).to_contain_text(recording.transcript)
        audio = item.locator("audio")
        expect(audio).to_have_count(1)
        audio.scroll_into_view_if_needed()
        assert audio.evaluate("a => a.play().then(() => true)") is True
        page.wait_for_function(
            "a => a.currentTime > 0 && Number.isFinite(a.duration)",
            arg=audio.element_handle(),
            timeout=5_000,
        )
        duration = audio.evaluate("a => { a.pause(); return a.duration; }")
        assert duration == pytest.approx(recording.seconds, abs=0.2)

    snapshot = page.locator(f'[data-item-id="{household.snapshot_id}"] img')
    snapshot.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=snapshot.element_handle()
    )
    assert snapshot.evaluate("img => img.naturalWidth") == SNAPSHOT_SIZE[0]

    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_the_other_households_items_stay_out_of_sight(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)
    expect(page.locator("audio")).to_have_count(len(household.recordings))

    html = page.content()
    assert household.other_recording.transcript not in html
    assert str(household.other_recording.item_id) not in html
    foreign = page.goto(f"/api/v1/items/{household.other_recording.item_id}/content")
    assert foreign is not None
    assert foreign.status == 404
    foreign_profile = page.goto(f"/profiles/{household.other_child_id}")
    assert foreign_profile is not None
    assert foreign_profile.status == 404


def test_a_kind_filter_shows_only_that_kind(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)

    page.get_by_role("link", name="Snapshots").click()

    expect(page).to_have_url(f"{base_url}/profiles/{household.child_id}?kind=snapshot")
    expect(page.get_by_role("link", name="Snapshots")).to_have_attribute("aria-current", "page")
    expect(page.locator("[data-item-id]")).to_have_count(1)
    expect(page.locator(f'[data-item-id="{household.snapshot_id}"] img')).to_be_visible()


def test_the_voice_filter_keeps_the_transcripts(
    page: Page, base_url: str, household: Household, parent_cookie: dict[str, Any]
) -> None:
    open_child_page(page, base_url, household, parent_cookie)

    with page.expect_navigation():
        page.get_by_role("link", name="Voice", exact=True).click()

    expect(page.locator("audio")).to_have_count(len(household.recordings))
    shown = page.locator(".transcript").all_inner_texts()
    assert [r.transcript for r in household.recordings if f"“{r.transcript}”" not in shown] == []


def test_signing_out_ends_the_session(page: Page, base_url: str, household: Household) -> None:
    # Its own session, through the form: signing out must not end the one other tests share.
    sign_in(page, household.email, PASSWORD)
    page.get_by_role("link", name=household.child_name).click()
    (old_session,) = [c for c in page.context.cookies() if c["name"] == "tutela_session"]

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()

    assert page.url == f"{base_url}/login"
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(f"{base_url}/login")
    # The server forgot the session too: its old cookie, replayed, no longer signs anyone in.
    page.context.add_cookies([old_session])
    page.goto("/")
    expect(page).to_have_url(f"{base_url}/login")


def test_a_second_factor_follows_the_password_and_another_session_can_be_ended(
    page: Page, base_url: str
) -> None:
    """R5, R6, S4: the authenticator code after the password; the sessions list ends one."""
    totp = pyotp.TOTP(CY_TOTP)
    sign_in(page, CY_EMAIL, PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    page.get_by_label("Code").fill(totp.now())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/")

    # A second session elsewhere: an API client, with the next time step's code.
    with httpx.Client(base_url=base_url) as api:
        first = api.post(
            "/api/v1/auth/token",
            json={"email": CY_EMAIL, "password": PASSWORD},
            headers={"user-agent": "TabletApp/2.1"},
        )
        assert first.status_code == 202
        done = api.post(
            "/api/v1/auth/token/factor",
            json={
                "challenge": first.json()["challenge"],
                "code": totp.at(datetime.now(UTC) + timedelta(seconds=30)),
            },
            headers={"user-agent": "TabletApp/2.1"},
        )
        assert done.status_code == 201, done.text
        tablet = {"authorization": f"Bearer {done.json()['token']}"}
        assert api.get("/api/v1/me", headers=tablet).status_code == 200

        page.get_by_role("link", name="Security").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in and security")
        rows = page.get_by_role("row").filter(has_text="TabletApp/2.1")
        expect(rows).to_have_count(1)
        expect(page.get_by_role("row").filter(has_text="This device")).to_have_count(1)
        rows.get_by_role("button", name="End this session").click()
        expect(page.get_by_role("status")).to_have_text("Session ended.")
        expect(page.get_by_role("row").filter(has_text="TabletApp/2.1")).to_have_count(0)

        assert api.get("/api/v1/me", headers=tablet).status_code == 401


def test_a_wrong_second_factor_code_keeps_the_person_out(page: Page, base_url: str) -> None:
    sign_in(page, CY_EMAIL, PASSWORD)
    page.get_by_label("Code").fill("000000")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_have_text("That code is not right.")
    page.goto("/")
    expect(page).to_have_url(f"{base_url}/login")


def test_a_passkey_is_added_on_the_security_page_and_then_signs_in(
    page: Page, base_url: str
) -> None:
    """R5 (W3C WebAuthn): a passkey added in the console right after a sign-in with a
    second factor (a fresh step-up, C7), then used as the second factor. Chromium's
    virtual authenticator plays the passkey."""
    virtual_authenticator(page)
    totp = pyotp.TOTP(DEE_TOTP)
    sign_in(page, DEE_EMAIL, PASSWORD)
    page.get_by_label("Code").fill(totp.now())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/")

    # The code just given is a fresh second factor: no further step-up for a few minutes.
    page.goto("/account/security")
    page.get_by_label("Name for a new passkey or security key").fill("Laptop passkey")
    page.get_by_role("button", name="Add a passkey", exact=True).click()
    expect(page.get_by_role("row").filter(has_text="Laptop passkey")).to_have_count(1)

    page.context.clear_cookies()
    sign_in(page, DEE_EMAIL, PASSWORD)
    page.get_by_role("button", name="Use your passkey or security key").click()
    expect(page).to_have_url(f"{base_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your household")
