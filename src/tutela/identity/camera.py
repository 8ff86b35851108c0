"""Who must hold a second factor before seeing camera media (R5), and the live check.

The settlement's failure was credential stuffing reaching stored video through accounts
without a second factor. So the rule is about what an account can see, not its role: any
account of a household with a camera, or whose visible profiles hold camera media (a
camera since revoked leaves its clips behind), needs a confirmed factor first. It is
checked when a session opens, again on every media request (a session opened before the
first camera arrived must not keep its old stage), and open sessions are demoted when a
camera is registered.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.households.models import Account, Device, DeviceKind
from tutela.identity import factors
from tutela.identity.models import Factor, SessionStage, SignInSession
from tutela.identity.owners import Owner
from tutela.vault.models import ItemKind, MediaItem

CAMERA_ITEM_KINDS = (ItemKind.VIDEO, ItemKind.SNAPSHOT)


def household_has_camera(session: Session, *, household_id: uuid.UUID) -> bool:
    """A camera device that is not revoked."""
    found = session.scalar(
        select(Device.id)
        .where(
            Device.household_id == household_id,
            Device.kind == DeviceKind.CAMERA,
            Device.revoked_at.is_(None),
        )
        .limit(1)
    )
    return found is not None


def sees_camera_media(
    session: Session, *, household_id: uuid.UUID, profile_ids: Collection[uuid.UUID]
) -> bool:
    """Whether a reader of `profile_ids` can see camera media, now or once it arrives."""
    if household_has_camera(session, household_id=household_id):
        return True
    if not profile_ids:
        return False
    found = session.scalar(
        select(MediaItem.id)
        .outerjoin(
            Device,
            (Device.household_id == MediaItem.household_id) & (Device.id == MediaItem.device_id),
        )
        .where(
            MediaItem.household_id == household_id,
            MediaItem.profile_id.in_(list(profile_ids)),
            or_(
                MediaItem.kind.in_([str(k) for k in CAMERA_ITEM_KINDS]),
                Device.kind == DeviceKind.CAMERA,
            ),
        )
        .limit(1)
    )
    return found is not None


def account_sees_camera_media(session: Session, owner: Owner) -> bool:
    """`sees_camera_media` for a customer account, through the profiles it can read."""
    from tutela.households.service import visible_profile_ids  # noqa: PLC0415

    if owner.is_staff or owner.household_id is None:
        return False
    account = session.get(Account, (owner.household_id, owner.id))
    if account is None:
        return False
    visible = visible_profile_ids(
        session,
        household_id=account.household_id,
        account_id=account.id,
        own_profile_id=account.profile_id,
    )
    return sees_camera_media(session, household_id=account.household_id, profile_ids=visible)


def camera_factor_missing(
    session: Session,
    *,
    owner: Owner,
    profile_ids: Collection[uuid.UUID],
) -> bool:
    """The live check of every media route (R5): camera media is visible to this account
    and it has no confirmed second factor. The factor is looked up first: for an
    account that has one, the check costs one indexed query."""
    if factors.has_second_factor(session, owner):
        return False
    assert owner.household_id is not None
    return sees_camera_media(session, household_id=owner.household_id, profile_ids=profile_ids)


def demote_without_factor(session: Session, *, household_id: uuid.UUID, now: datetime) -> int:
    """A camera arrived: every open full session of the household's accounts that have no
    confirmed factor may now only enrol one (R5). The caller commits; the number demoted."""
    with_factor = select(Factor.account_id).where(
        Factor.household_id == household_id,
        Factor.account_id.is_not(None),
        Factor.confirmed_at.is_not(None),
    )
    done = session.execute(
        update(SignInSession)
        .where(
            SignInSession.household_id == household_id,
            SignInSession.account_id.is_not(None),
            SignInSession.account_id.not_in(with_factor),
            SignInSession.stage == SessionStage.FULL,
            SignInSession.revoked_at.is_(None),
            SignInSession.expires_at > now,
        )
        .values(stage=SessionStage.ENROL)
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(done, "rowcount", 0) or 0)
    if count:
        record(
            session,
            tag=AuditTag.SESSIONS_DEMOTED,
            actor="system",
            now=now,
            household_id=household_id,
            subject=f"household:{household_id}",
        )
    return count
