"""Use cases of exports: ask for a copy of a profile's data, follow it, download it (C6, C7).

An adult asks for their own profile, a guardian for a child's; anything else, another
household's included, is not found. A worker packages the copy (`exports.worker`), seals
it under a key of its own (an item key under the profile, named by the package's id), and
the download streams it back decrypted while its link lasts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, Gone, KeyUnavailable, NotFound
from tutela.core.ids import uuid7
from tutela.exports import rules
from tutela.exports.models import Export, ExportState
from tutela.households.models import Profile, ProfileState
from tutela.vault import crypto
from tutela.vault.models import ItemState, MediaItem
from tutela.vault.service import Vault


@dataclass
class Download:
    export: Export
    chunks: Iterator[bytes] = field(repr=False)


def _not_found() -> NotFound:
    return NotFound("No such profile or export.", code="not_found")


def check_exportable(
    session: Session, *, household_id: uuid.UUID, profile_id: uuid.UUID, visible: set[uuid.UUID]
) -> None:
    """Only a profile the reader sees (their own, their children: C6) and not under erasure."""
    if profile_id not in visible:
        raise _not_found()
    profile = session.get(Profile, (household_id, profile_id))
    if profile is None:
        raise _not_found()
    if profile.state != ProfileState.ACTIVE:
        raise Conflict("This profile is being erased.", code="under_erasure")


def request_export(
    session: Session,
    *,
    household_id: uuid.UUID,
    account_id: uuid.UUID,
    profile_id: uuid.UUID,
    visible: set[uuid.UUID],
    now: datetime,
) -> Export:
    """Queue a copy of `profile_id`'s data for the account (C6). The caller has checked a
    recent step-up (C7). One open export per profile and account at a time: asking again
    while one is being made answers that one."""
    check_exportable(session, household_id=household_id, profile_id=profile_id, visible=visible)
    open_one = session.scalar(
        select(Export).where(
            Export.household_id == household_id,
            Export.requested_by == account_id,
            Export.profile_id == profile_id,
            Export.state.in_(rules.OPEN_STATES),
        )
    )
    if open_one is not None:
        return open_one
    total = session.scalar(
        select(func.count())
        .select_from(MediaItem)
        .where(
            MediaItem.household_id == household_id,
            MediaItem.profile_id == profile_id,
            MediaItem.state == ItemState.ACTIVE,
        )
    )
    export = Export(
        household_id=household_id,
        id=uuid7(),
        profile_id=profile_id,
        requested_by=account_id,
        state=ExportState.QUEUED,
        items_total=int(total or 0),
        items_done=0,
        size=0,
        sealed_size=0,
        attempts=0,
        requested_at=now,
    )
    session.add(export)
    record(
        session,
        tag=AuditTag.EXPORT_REQUESTED,
        actor=f"account:{account_id}",
        now=now,
        household_id=household_id,
        subject=f"export:{export.id}",
    )
    session.commit()
    return export


def get_export(
    session: Session, *, household_id: uuid.UUID, account_id: uuid.UUID, export_id: uuid.UUID
) -> Export:
    """One of the account's own exports; anybody else's answers not found."""
    export = session.get(Export, (household_id, export_id))
    if export is None or export.requested_by != account_id:
        raise _not_found()
    return export


def list_exports(
    session: Session, *, household_id: uuid.UUID, account_id: uuid.UUID, limit: int = 100
) -> list[Export]:
    """The account's exports, newest first."""
    return list(
        session.scalars(
            select(Export)
            .where(Export.household_id == household_id, Export.requested_by == account_id)
            .order_by(Export.requested_at.desc(), Export.id.desc())
            .limit(limit)
        )
    )


def open_download(
    session: Session,
    vault: Vault,
    *,
    household_id: uuid.UUID,
    account_id: uuid.UUID,
    export_id: uuid.UUID,
    now: datetime,
) -> Download:
    """The package, decrypted a chunk at a time, while its link lasts (410 after, 409
    before it is ready). The download is recorded in the audit trail."""
    export = get_export(
        session, household_id=household_id, account_id=account_id, export_id=export_id
    )
    rules.check_downloadable(export.state, export.expires_at, now=now)
    assert export.package_id is not None and export.blob_key is not None
    try:
        key = vault.keys.item_key(household_id=household_id, item_id=export.package_id)
    except KeyUnavailable as exc:
        # Erased (its items were, or its link expired) before the row said so.
        raise Gone("This download link has expired.", code="export_expired") from exc
    enc_key, _ = crypto.item_subkeys(key)
    blob = export.blob_key
    header = vault.blobs.read_at(blob, 0, crypto.STREAM_HEADER.size)
    opener = crypto.StreamOpener(
        enc_key,
        aad=rules.package_aad(household_id, export.package_id),
        header=header,
        plain_size=export.size,
    )
    chunks = opener.read(lambda offset, length: vault.blobs.read_at(blob, offset, length))
    record(
        session,
        tag=AuditTag.EXPORT_DOWNLOADED,
        actor=f"account:{account_id}",
        now=now,
        household_id=household_id,
        subject=f"export:{export.id}",
    )
    session.commit()
    return Download(export=export, chunks=chunks)
