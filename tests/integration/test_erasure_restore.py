"""A backup of the main database restored after an erasure shows nothing readable of what
was erased, and `restore_check` erases it again (S6, S8).

The backup is taken the way an operator would: SQLite's online backup API for the
embedded store, `pg_dump` and `psql` for PostgreSQL. The blob folder is backed up and
restored with it. The key store is never restored over destroyed keys.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.factories import make_home, seed_media
from tutela.audit.models import AuditEvent
from tutela.container import Container
from tutela.core.errors import KeyUnavailable
from tutela.db.engine import purge_journal
from tutela.erasure import receipts
from tutela.erasure.models import ErasureRequest, RequesterKind, ScopeKind
from tutela.erasure.restore import restore_check
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Household, Profile
from tutela.households.service import profile_view
from tutela.vault import service as vault_service
from tutela.vault.models import MediaItem

GUARDIAN = Requester(RequesterKind.GUARDIAN, "account:test")


@dataclass(frozen=True)
class Backup:
    database: Path
    blobs: Path


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_copy(source: str, target: str) -> None:
    """SQLite's online backup API: a consistent copy, whatever the write-ahead log holds."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def take_backup(container: Container, backend: str, folder: Path) -> Backup:
    folder.mkdir()
    backup = Backup(folder / "main.backup", folder / "blobs.backup")
    engine = container.stores.main
    if backend == "sqlite":
        purge_journal(engine)
        assert engine.url.database is not None
        _sqlite_copy(engine.url.database, str(backup.database))
    else:
        if shutil.which("pg_dump") is None or shutil.which("psql") is None:
            pytest.skip("pg_dump and psql are needed to back up PostgreSQL")
        subprocess.run(
            [
                "pg_dump",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(backup.database),
                _libpq_url(container.settings.main_url),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    shutil.copytree(container.settings.blob_path, backup.blobs)
    return backup


def restore_backup(container: Container, backend: str, backup: Backup) -> None:
    """Put the backup back over the main database and the blob folder, as after a loss."""
    engine = container.stores.main
    engine.dispose()
    if backend == "sqlite":
        assert engine.url.database is not None
        _sqlite_copy(str(backup.database), engine.url.database)
    else:
        subprocess.run(
            [
                "psql",
                "--quiet",
                "--no-psqlrc",
                "--set",
                "ON_ERROR_STOP=1",
                "--file",
                str(backup.database),
                _libpq_url(container.settings.main_url),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    shutil.copytree(backup.blobs, container.settings.blob_path, dirs_exist_ok=True)


def _items(container: Container, household_id: uuid.UUID) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id).where(MediaItem.household_id == household_id)))


def _content(container: Container, household_id: uuid.UUID, item_id: uuid.UUID) -> bytes:
    """An item read as its owner reads it (keys, blob, decryption)."""
    with container.stores.session() as s:
        item = s.get(MediaItem, (household_id, item_id))
        assert item is not None
        reader = vault_service.Reader(household_id, frozenset({item.profile_id}))
        opened = vault_service.open_content(s, container.vault, reader=reader, item_id=item_id)
        return b"".join(opened.chunks)


def _request_count(container: Container) -> int:
    with container.stores.session() as s:
        return int(s.scalar(select(func.count()).select_from(ErasureRequest)) or 0)


def _verified_receipt(container: Container, row: ErasureRequest) -> dict[str, object]:
    public = receipts.signing_key(container.vault.keys, now=container.clock.now()).public_key()
    return receipts.verify(json.loads(row.receipt or "{}"), public)


def test_a_restored_backup_holds_nothing_readable_of_an_erased_profile(
    container: Container, backend: str, tmp_path: Path
) -> None:
    home = make_home(container, tag="restore")
    hh, child = home.household_id, home.child_profiles[0]
    made = seed_media(container, home)
    erased = {i for ids in made.values() for i in ids}
    adult = next(iter(home.adult_profiles.values()))
    kept = seed_media(container, home, profile=adult, voices=1, clips=0)
    kept_ids = {i for ids in kept.values() for i in ids}
    kept_voice = kept["voice"][0]
    voice_before = _content(container, hh, kept_voice)
    backup = take_backup(container, backend, tmp_path / "backup")

    container.erasure.request(Scope(ScopeKind.PROFILE, hh, profile_id=child), GUARDIAN)
    assert container.erasure.run_pending().completed == 1
    restore_backup(container, backend, backup)

    # The rows are back, and the blobs: the backup predates the erasure ...
    assert _items(container, hh) == erased | kept_ids
    assert list(container.vault.blobs.keys(f"{hh}/{child}/"))
    with container.stores.session() as s:
        profile = s.get(Profile, (hh, child))
        assert profile is not None
        assert _request_count(container) == 0
        # ... but nothing of them can be read: their keys were destroyed (S6).
        with pytest.raises(KeyUnavailable):
            profile_view(container.vault.keys, profile)
    for item_id in erased:
        with pytest.raises(KeyUnavailable):
            _content(container, hh, item_id)
    assert _content(container, hh, kept_voice) == voice_before

    dry = restore_check(container, dry_run=True)
    assert (dry.households, dry.profiles, dry.items, dry.requests) == (0, 1, 0, [])
    assert _request_count(container) == 0
    assert _items(container, hh) == erased | kept_ids

    report = restore_check(container)
    assert (report.households, report.profiles, report.items) == (0, 1, 0)
    assert len(report.requests) == 1
    assert container.erasure.run_pending().completed == 1

    with container.stores.session() as s:
        assert s.get(Profile, (hh, child)) is None
        again = s.get(ErasureRequest, report.requests[0])
        assert again is not None
        checked = s.scalars(
            select(AuditEvent.id).where(AuditEvent.tag == "erasure:backup:restore-check")
        ).all()
    assert len(checked) == 1  # the real check; the dry run changed nothing
    assert again.status == "completed", (again.step, again.findings, again.last_error)
    assert again.requester_kind == RequesterKind.RESTORE_CHECK
    body = _verified_receipt(container, again)
    assert body["counts"] == {k: len(v) for k, v in made.items() if v} | {"profiles": 1}
    assert _items(container, hh) == kept_ids
    assert list(container.vault.blobs.keys(f"{hh}/{child}/")) == []
    assert _content(container, hh, kept_voice) == voice_before

    second = restore_check(container)
    assert (second.found, second.requests) == (0, [])
    assert container.erasure.run_pending().completed == 0


def test_an_item_erased_after_the_backup_is_erased_again_and_its_siblings_stay(
    container: Container, backend: str, tmp_path: Path
) -> None:
    home = make_home(container, tag="restoreitem")
    hh = home.household_id
    made = seed_media(container, home)
    everything = {i for ids in made.values() for i in ids}
    voice, transcript = made["voice"][0], made["transcript"][0]
    sibling = made["voice"][1]
    sibling_audio = _content(container, hh, sibling)
    backup = take_backup(container, backend, tmp_path / "backup")

    container.erasure.request(Scope(ScopeKind.ITEM, hh, item_id=voice), GUARDIAN)
    assert container.erasure.run_pending().completed == 1
    restore_backup(container, backend, backup)

    assert _items(container, hh) == everything
    for item_id in (voice, transcript):
        with pytest.raises(KeyUnavailable):
            _content(container, hh, item_id)

    dry = restore_check(container, dry_run=True)
    assert (dry.households, dry.profiles, dry.items) == (0, 0, 2)
    assert _items(container, hh) == everything

    report = restore_check(container)
    assert report.items == 2 and len(report.requests) == 1
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        again = s.get(ErasureRequest, report.requests[0])
    assert again is not None and again.status == "completed", again.findings
    assert _verified_receipt(container, again)["counts"] == {"voice": 1, "transcript": 1}
    assert _items(container, hh) == everything - {voice, transcript}
    assert not container.vault.blobs.exists(f"{hh}/{home.child_profiles[0]}/{voice}")
    assert _content(container, hh, sibling) == sibling_audio
    for item_id in everything - {voice, transcript}:
        _content(container, hh, item_id)  # every sibling still opens

    assert restore_check(container).found == 0


def test_a_closed_household_restored_from_a_backup_is_closed_again(
    container: Container, backend: str, tmp_path: Path
) -> None:
    home = make_home(container, tag="restorehh")
    other = make_home(container, tag="restorekept", child_name="Otto Lindqvist")
    made = seed_media(container, home, voices=1, clips=0)
    theirs = seed_media(container, other, voices=1, clips=0)
    backup = take_backup(container, backend, tmp_path / "backup")

    closure = Requester(RequesterKind.ACCOUNT_CLOSURE, "account:owner")
    container.erasure.request(Scope(ScopeKind.HOUSEHOLD, home.household_id), closure)
    assert container.erasure.run_pending().completed == 1
    restore_backup(container, backend, backup)

    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is not None
    for item_id in (i for ids in made.values() for i in ids):
        with pytest.raises(KeyUnavailable):
            _content(container, home.household_id, item_id)

    report = restore_check(container)
    assert (report.households, report.profiles, report.items) == (1, 0, 0)
    assert container.erasure.run_pending().completed == 1
    with container.stores.session() as s:
        assert s.get(Household, home.household_id) is None
        assert s.get(Household, other.household_id) is not None
    assert _items(container, home.household_id) == set()
    assert list(container.vault.blobs.keys(f"{home.household_id}/")) == []
    assert _content(container, other.household_id, theirs["voice"][0])
    assert restore_check(container).found == 0
