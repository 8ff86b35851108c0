"""Documents a person hands Tutela for a moment: sealed like any item, erased right after.

A photo of a government ID, uploaded to verify a parent (C3), is one: it is stored as a
snapshot item of the uploader's own profile, under a key of its own, so the one deletion
path (`erasure`) can erase it with a remnant check and a receipt as soon as the check is
done. It is never an item of the child.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from tutela.core.errors import Conflict, InvalidInput, NotFound
from tutela.core.ids import uuid7
from tutela.households.models import Profile, ProfileState
from tutela.vault.models import ItemKind, ItemState, MediaItem
from tutela.vault.rules import check_sniffed
from tutela.vault.service import Vault, _store_sealed

DOCUMENT_TYPES = frozenset({"image/jpeg"})


def store_document(
    session: Session,
    vault: Vault,
    *,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    media_type: str,
    body: bytes,
    now: datetime,
) -> MediaItem:
    """Seal a document as a snapshot item of `profile_id` (its owner) and commit it."""
    if media_type not in DOCUMENT_TYPES:
        raise InvalidInput("An ID photo is a JPEG image.", code="unsupported_document")
    if not body:
        raise InvalidInput("The upload is empty.", code="empty_upload")
    check_sniffed(body[:64], media_type)
    profile = session.get(Profile, (household_id, profile_id))
    if profile is None:
        raise NotFound("No such profile.", code="not_found")
    if profile.state != ProfileState.ACTIVE:
        raise Conflict("This profile is being erased; nothing more is taken.", code="under_erasure")
    item = MediaItem(
        household_id=household_id,
        id=uuid7(),
        profile_id=profile_id,
        subject_class=profile.kind,
        device_id=None,
        source_item_id=None,
        kind=ItemKind.SNAPSHOT,
        media_type=media_type,
        captured_at=now,
        received_at=now,
        state=ItemState.ACTIVE,
    )
    return _store_sealed(session, vault, item=item, pieces=[body], now=now)
