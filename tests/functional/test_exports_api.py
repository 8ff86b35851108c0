"""Exports through the HTTP API: a parent's and an adult's copy of a profile's data (C6, C7).

A worker packages the copy (these tests run its pass themselves: the test settings turn
the embedded worker off); it is sealed at rest, streamed back decrypted, and erased
through the erasure engine once its link expires, with a receipt (A8, S6).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import zipfile
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.factories import device_token, make_home, seed_media, wav_bytes
from tests.functional.conftest import owner_email, sign_in, upload_voice
from tests.functional.test_erasure_api import erase, stepped_up
from tutela.container import Container
from tutela.core.errors import KeyUnavailable
from tutela.exports.models import Export
from tutela.households.service import CreatedHome
from tutela.vault import service as vault
from tutela.vault.models import ItemKey, ItemState, MediaItem

API = "/api/v1"


def ask(client: TestClient, headers: dict[str, str], profile: uuid.UUID) -> Any:
    return client.post(f"{API}/profiles/{profile}/exports", headers=headers)


def package_blobs(container: Container, home: CreatedHome, profile: uuid.UUID) -> list[Path]:
    folder = Path(container.settings.blob_path) / str(home.household_id) / str(profile) / "exports"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def key_exists(container: Container, household_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    try:
        container.vault.keys.item_key(household_id=household_id, item_id=key_id)
    except KeyUnavailable:
        return False
    return True


def held(container: Container, home: CreatedHome, profile: uuid.UUID) -> dict[str, bytes]:
    """Every active item of the profile as the vault holds it, decrypted, by id."""
    reader = vault.Reader(home.household_id, frozenset({profile}))
    out = {}
    with container.stores.session() as s:
        items = s.scalars(
            select(MediaItem).where(
                MediaItem.household_id == home.household_id,
                MediaItem.profile_id == profile,
                MediaItem.state == ItemState.ACTIVE,
            )
        ).all()
        for item in items:
            if item.blob_key is None:
                out[str(item.id)] = vault.read_transcript(container.vault, item=item)[
                    "text"
                ].encode()  # type: ignore[union-attr]
            else:
                content = vault.open_content(s, container.vault, reader=reader, item_id=item.id)
                out[str(item.id)] = b"".join(content.chunks)
    return out


def ready_export(
    client: TestClient, container: Container, headers: dict[str, str], profile: uuid.UUID
) -> dict[str, Any]:
    r = ask(client, headers, profile)
    assert r.status_code == 202, r.text
    assert container.export_pass() == 1
    answer = client.get(f"{API}/exports/{r.json()['id']}", headers=headers).json()
    assert answer["state"] == "ready", answer
    return dict(answer)


def test_a_parent_downloads_a_copy_of_a_childs_data_item_for_item(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    seed_media(container, home, voices=3, clips=2)
    spoken = wav_bytes(0.5, pitch=523)
    spoken_id = upload_voice(client, container, home, body=spoken)
    email = owner_email(home)
    headers = sign_in(client, email)

    # Without a fresh second factor (or password), no copy is made (C7).
    refused = ask(client, headers, child)
    assert refused.status_code == 403
    assert refused.json()["code"] == "step_up_required"

    headers = stepped_up(client, email)
    r = ask(client, headers, child)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["state"] == "queued"
    assert queued["progress"] == {"done": 0, "total": 12}
    assert queued["download_url"] is None
    # Asking again while it is being made answers the same export.
    assert ask(client, headers, child).json()["id"] == queued["id"]
    early = client.get(f"{API}/exports/{queued['id']}/download", headers=headers)
    assert early.status_code == 409
    assert early.json()["code"] == "export_not_ready"

    assert container.export_pass() == 1
    ready = client.get(f"{API}/exports/{queued['id']}", headers=headers).json()
    assert ready["state"] == "ready"
    assert ready["progress"] == {"done": 12, "total": 12}
    expires = ready["expires_at"]
    assert expires is not None
    listed = client.get(f"{API}/exports", headers=headers).json()
    assert [e["id"] for e in listed] == [queued["id"]]

    download = client.get(ready["download_url"], headers=headers)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert download.headers["cache-control"] == "no-store"
    assert int(download.headers["content-length"]) == len(download.content) == ready["size"]
    package = zipfile.ZipFile(io.BytesIO(download.content))
    assert package.testzip() is None
    names = set(package.namelist())
    for name in ("README.txt", "manifest.json", "profile.json", "transcripts.json"):
        assert name in names
    assert {"transcripts.csv", "locations.json", "locations.csv"} <= names

    # The manifest matches what is held, item for item: ids, sizes and SHA-256.
    manifest = json.loads(package.read("manifest.json"))
    contents = held(container, home, child)
    assert {i["id"] for i in manifest["items"]} == set(contents)
    with container.stores.session() as s:
        sizes = {
            str(i.id): (i.kind, i.size)
            for i in s.scalars(select(MediaItem).where(MediaItem.profile_id == child))
        }
    for entry in manifest["items"]:
        data = contents[entry["id"]]
        assert (entry["kind"], entry["size"]) == sizes[entry["id"]]
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        if entry["path"].startswith("media/"):
            assert entry["path"].startswith(f"media/{entry['kind']}/")
            assert package.read(entry["path"]) == data
    for file in manifest["files"]:
        body = package.read(file["path"])
        assert (len(body), hashlib.sha256(body).hexdigest()) == (file["size"], file["sha256"])
    assert manifest["left_out"] == 0

    # The zip's recording is the uploaded bytes, in its original format.
    mine = next(i for i in manifest["items"] if i["id"] == spoken_id)
    assert mine["path"].endswith(f"_{spoken_id}.wav")
    assert package.read(mine["path"]) == spoken
    transcripts = json.loads(package.read("transcripts.json"))
    assert sorted(t["text"] for t in transcripts) == [
        f"please play the dinosaur song number {n}" for n in range(3)
    ]
    rows = list(csv.DictReader(io.StringIO(package.read("transcripts.csv").decode())))
    assert sorted(r["text"] for r in rows) == sorted(t["text"] for t in transcripts)
    points = list(csv.DictReader(io.StringIO(package.read("locations.csv").decode())))
    assert [(p["latitude"], p["longitude"]) for p in points] == [("51.5", "-0.12")]
    assert json.loads(package.read("profile.json"))["name"] == "Lily Marchetti"

    # At rest the package is ciphertext: no uploaded byte run appears in its blob.
    (blob,) = package_blobs(container, home, child)
    sealed = blob.read_bytes()
    assert spoken[1000:1064] not in sealed and b"manifest.json" not in sealed

    # The parent is told, in their mailbox, with the link and its expiry.
    mail = [
        BytesParser(policy=policy.default).parsebytes(p.read_bytes())
        for p in Path(container.settings.mail_path).glob("*.eml")
    ]
    ready_mail = [m for m in mail if m["subject"] == "Your Tutela download is ready"]
    assert len(ready_mail) == 1 and email in ready_mail[0]["to"]
    body = str(ready_mail[0].get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert f"/api/v1/exports/{queued['id']}/download" in body


def test_only_visible_profiles_are_exported_and_other_homes_get_not_found(
    client: TestClient, container: Container, home: CreatedHome, other_home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    seed_media(container, home, voices=1, clips=0)
    stranger = stepped_up(client, owner_email(other_home))
    refused = ask(client, stranger, child)
    assert refused.status_code == 404
    assert refused.json()["code"] == "not_found"
    # Not found before the step-up is even asked for: nothing about other ids leaks.
    stale = sign_in(client, owner_email(other_home))
    container.clock.advance(timedelta(minutes=container.settings.step_up_minutes + 1))
    assert ask(client, stale, child).json()["code"] == "not_found"
    assert ask(client, stale, home.adult_profiles[owner_email(home)]).status_code == 404

    parent = stepped_up(client, owner_email(home))
    mine = ready_export(client, container, parent, child)
    # Another household's parent cannot see, follow or download it.
    stranger = stepped_up(client, owner_email(other_home))
    for path in (f"/exports/{mine['id']}", f"/exports/{mine['id']}/download"):
        r = client.get(API + path, headers=stranger)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get(f"{API}/exports", headers=stranger).json() == []
    # An adult's own profile is theirs to export.
    own = ask(client, stranger, other_home.adult_profiles[owner_email(other_home)])
    assert own.status_code == 202


def test_an_adult_who_is_not_the_guardian_gets_not_found(
    client: TestClient, container: Container, unique: str
) -> None:
    home = make_home(container, tag=unique, second_adult=True)
    child = home.child_profiles[0]
    other_adult = next(e for e in home.accounts if e.startswith("bruno."))
    headers = stepped_up(client, other_adult)
    assert ask(client, headers, child).json()["code"] == "not_found"
    assert ask(client, headers, home.adult_profiles[owner_email(home)]).status_code == 404


def test_after_expiry_the_download_is_gone_and_the_package_erased_with_a_receipt(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    seed_media(container, home, voices=2, clips=1)
    headers = stepped_up(client, owner_email(home))
    ready = ready_export(client, container, headers, child)
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, uuid.UUID(ready["id"])))
        assert row is not None and row.package_id is not None
        package_id = row.package_id
    assert key_exists(container, home.household_id, package_id)
    assert len(package_blobs(container, home, child)) == 1

    container.clock.advance(timedelta(days=container.settings.export_link_days, seconds=1))
    headers = sign_in(client, owner_email(home))  # a week on: a new session
    # The link's time is up: 410 at once, before any worker has run.
    gone = client.get(ready["download_url"], headers=headers)
    assert gone.status_code == 410 and gone.json()["code"] == "export_expired"
    assert client.get(f"{API}/exports/{ready['id']}", headers=headers).json()["state"] == "expired"

    container.export_pass()
    # The expiry's erasure destroyed the package's key before it answered (S6).
    assert not key_exists(container, home.household_id, package_id)
    assert container.erasure.run_pending().completed == 1
    assert package_blobs(container, home, child) == []
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, uuid.UUID(ready["id"])))
        assert row is not None
        assert (row.state, row.package_id, row.blob_key) == ("expired", None, None)
    with container.stores.key_sessions() as k:
        assert k.get(ItemKey, (home.household_id, package_id)) is None
    seen = client.get(f"{API}/exports/{ready['id']}", headers=headers).json()
    assert seen["state"] == "expired" and seen["download_url"] is None
    # The erasure completed only because its remnant check was clean; its receipt is signed.
    receipt = client.get(seen["erasure_receipt_url"])
    assert receipt.status_code == 200, receipt.text
    assert "export" in json.dumps(receipt.json())
    again = client.get(ready["download_url"], headers=headers)
    assert again.status_code == 410 and again.json()["code"] == "export_expired"
    # The child's own items are untouched.
    assert len(held(container, home, child)) == 7


def test_a_childs_profile_erasure_removes_its_exports(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    seed_media(container, home, voices=1, clips=1)
    headers = stepped_up(client, owner_email(home))
    ready_export(client, container, headers, child)
    queued = ask(client, headers, child)  # a second one, still queued
    assert queued.status_code == 202

    r = erase(client, headers, scope="profile", profile_id=str(child))
    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        assert s.scalar(select(func.count()).select_from(Export)) == 0
    with container.stores.key_sessions() as k:
        left = k.scalar(
            select(func.count()).select_from(ItemKey).where(ItemKey.profile_id == child)
        )
        assert left == 0
    assert package_blobs(container, home, child) == []
    assert client.get(f"{API}/exports", headers=headers).json() == []
    assert container.export_pass() == 0


def test_erasing_an_item_also_erases_the_copies_made_of_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    child = home.child_profiles[0]
    made = seed_media(container, home, voices=2, clips=0)
    headers = stepped_up(client, owner_email(home))
    ready = ready_export(client, container, headers, child)
    with container.stores.session() as s:
        row = s.get(Export, (home.household_id, uuid.UUID(ready["id"])))
        assert row is not None and row.package_id is not None
        package_id = row.package_id

    r = erase(client, headers, scope="item", item_id=str(made["voice"][0]))
    assert r.status_code == 202, r.text
    # Deletion reaches every copy (A5): the package holding the recording is unreadable.
    assert not key_exists(container, home.household_id, package_id)
    assert container.erasure.run_pending().completed == 1
    seen = client.get(f"{API}/exports/{ready['id']}", headers=headers).json()
    assert (seen["state"], seen["reason"]) == ("expired", "items_erased")
    assert package_blobs(container, home, child) == []
    gone = client.get(ready["download_url"], headers=headers)
    assert gone.status_code == 410


def test_the_worker_reports_progress_and_a_dead_workers_export_is_made_again(
    client: TestClient,
    container: Container,
    home: CreatedHome,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tutela.exports import contents, worker

    child = home.child_profiles[0]
    seed_media(container, home, voices=4, clips=2)
    headers = stepped_up(client, owner_email(home))
    export_id = ask(client, headers, child).json()["id"]

    # A worker takes it and dies: its lease runs out, its half-made package goes.
    dead = worker.claim(container, owner="dead-worker")
    assert dead is not None
    container.vault.keys.create_item_key(
        household_id=home.household_id,
        profile_id=child,
        item_id=dead.package_id,
        now=container.clock.now(),
    )
    container.vault.blobs.write(dead.blob_key, [b"half a package"])
    assert container.export_pass() == 0  # still leased
    shown = client.get(f"{API}/exports/{export_id}", headers=headers).json()
    assert shown["state"] == "packaging"

    seen: list[int] = []
    monkeypatch.setattr(contents, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(contents, "PAGE", 2)  # rows read two at a time: every page is seen
    real_tell = contents.Progress.tell

    def tell(self: Any) -> None:
        real_tell(self)
        answer = client.get(f"{API}/exports/{export_id}", headers=headers).json()
        seen.append(answer["progress"]["done"])

    monkeypatch.setattr(contents.Progress, "tell", tell)
    container.clock.advance(timedelta(seconds=container.settings.export_lease_seconds + 1))
    assert container.export_pass() == 1
    total = 4 * 2 + 2 * 2 + 1
    assert seen == sorted(seen) and seen[0] < total and seen[-1] == total
    assert len(set(seen)) > 3
    assert not key_exists(container, home.household_id, dead.package_id)
    assert not Path(container.settings.blob_path, dead.blob_key).exists()
    ready = client.get(f"{API}/exports/{export_id}", headers=headers).json()
    assert ready["state"] == "ready" and ready["progress"] == {"done": total, "total": total}
    download = client.get(ready["download_url"], headers=headers)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(download.content)).read("manifest.json"))
    assert {i["id"] for i in manifest["items"]} == set(held(container, home, child))


def test_an_adults_erase_everything_about_me_takes_their_copy_with_it(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    email = owner_email(home)
    own = home.adult_profiles[email]
    seed_media(container, home, profile=own, voices=1, clips=0)
    headers = stepped_up(client, email)
    ready = ready_export(client, container, headers, own)
    assert ready["progress"]["total"] == 3

    r = erase(client, headers, scope="items", profile_id=str(own))
    assert r.status_code == 202, r.text
    assert container.erasure.run_pending().completed == 1
    seen = client.get(f"{API}/exports/{ready['id']}", headers=headers).json()
    assert (seen["state"], seen["reason"]) == ("expired", "items_erased")
    assert client.get(ready["download_url"], headers=headers).status_code == 410
    assert package_blobs(container, home, own) == []


def test_voice_used_in_place_of_typing_is_listed_but_has_no_file(
    client: TestClient, container: Container, home: CreatedHome
) -> None:
    """C11: an ephemeral recording's audio was never stored, so the copy names the item
    (with its transcript) and carries no file or digest for it; the export still works."""
    kept_id = upload_voice(client, container, home, body=wav_bytes(0.3))
    when = (container.clock.now() - timedelta(minutes=3)).isoformat()
    device = {"authorization": client_device_auth(container, home)}
    r = client.post(
        f"{API}/ingest/media",
        params={
            "profile_id": str(home.child_profiles[0]),
            "kind": "voice",
            "captured_at": when,
            "ephemeral": "true",
        },
        content=wav_bytes(0.3),
        headers={**device, "content-type": "audio/wav"},
    )
    assert r.status_code == 201, r.text
    spoken_id = r.json()["id"]
    headers = stepped_up(client, owner_email(home))
    ready = ready_export(client, container, headers, home.child_profiles[0])
    body = client.get(ready["download_url"], headers=headers).content
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = zf.namelist()
    items = {i["id"]: i for i in manifest["items"]}
    assert items[spoken_id]["path"] is None
    assert items[spoken_id]["sha256"] is None
    assert items[kept_id]["path"] in names
    assert not [n for n in names if spoken_id in n]


def client_device_auth(container: Container, home: CreatedHome) -> str:
    return f"Bearer {device_token(home, container, 'voice')}"
