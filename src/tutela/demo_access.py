"""The demo's record of employees' looks at the documented home's media, so its access
log (/privacy/access, GET /api/v1/access-log) has something to show (R3, R9).

Demo only: the looks are made up, through the same `AccessTransparency.record_access` the
access-control part will call, so each is checked against the staff-access policy like a
real one. The reviewer who makes some of them is added without a usable password.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tutela.container import Container
from tutela.demo import DEMO_DOMAIN, DEMO_OWNER_EMAIL
from tutela.households import service as households
from tutela.households.models import Device, Guardianship
from tutela.identity.staff import StaffRole, add_staff, find_staff
from tutela.transparency.models import StaffMediaAccess
from tutela.transparency.rules import AccessPurpose
from tutela.vault.models import ItemKind, ItemState, MediaItem

DEMO_REVIEWER_EMAIL: Final = f"reviewer@{DEMO_DOMAIN}"
_OFFICER_EMAIL: Final = f"privacy@{DEMO_DOMAIN}"


def ensure_demo_accesses(container: Container) -> int:
    """Record a few looks at the documented home's media, once; returns how many."""
    now = container.clock.now()
    keys = container.vault.keys
    with container.stores.session() as session:
        owner = households.find_account(session, keys, email=DEMO_OWNER_EMAIL, now=now)
        if owner is None:
            return 0
        hh = owner.household_id
        if session.scalar(
            select(func.count())
            .select_from(StaffMediaAccess)
            .where(StaffMediaAccess.household_id == hh)
        ):
            return 0
        reviewer = _employee(session, container, DEMO_REVIEWER_EMAIL, StaffRole.REVIEWER, now)
        officer = _employee(session, container, _OFFICER_EMAIL, StaffRole.PRIVACY_OFFICER, now)
        child = session.scalar(
            select(Guardianship.child_profile_id).where(
                Guardianship.household_id == hh, Guardianship.guardian_account_id == owner.id
            )
        )
        private = [z.value for z in container.staff_access.never_reviewable_zones]
        camera = (ItemKind.VIDEO, ItemKind.SNAPSHOT)
        parent_clip = _item(session, hh, owner.profile_id, (*camera, ItemKind.VOICE), private)
        child_snapshot = _item(session, hh, child, (*camera, ItemKind.VOICE), private)
        parent_voice = _item(session, hh, owner.profile_id, (ItemKind.VOICE,), private)
        looks: list[tuple[uuid.UUID, StaffRole, AccessPurpose, uuid.UUID | None, str | None, int]]
        looks = [
            (
                owner.profile_id,
                StaffRole.REVIEWER,
                AccessPurpose.SUPPORT_TICKET,
                parent_clip,
                "SUP-20431",
                3,
            ),
            (
                owner.profile_id,
                StaffRole.PRIVACY_OFFICER,
                AccessPurpose.LEGAL_PROCESS,
                parent_voice,
                "LP-2026-0117",
                12,
            ),
        ]
        if child is not None:
            looks += [
                (
                    child,
                    StaffRole.REVIEWER,
                    AccessPurpose.SAFETY_REVIEW,
                    child_snapshot,
                    "TS-1182",
                    6,
                ),
                (child, StaffRole.PRIVACY_OFFICER, AccessPurpose.BREAK_GLASS, None, None, 20),
            ]
        made = 0
        for profile_id, role, purpose, item_id, ticket, days in looks:
            if item_id is None and purpose is not AccessPurpose.BREAK_GLASS:
                continue  # the demo's history has no such item
            container.transparency.record_access(
                session,
                household_id=hh,
                profile_id=profile_id,
                staff_id=reviewer if role is StaffRole.REVIEWER else officer,
                staff_role=role.value,
                purpose=purpose.value,
                policy_id=f"demo-{role.value}-{purpose.value}",
                accessed_at=now - timedelta(days=days, hours=2 + made),
                item_id=item_id,
                ticket=ticket,
            )
            made += 1
        session.commit()
    return made


def _employee(
    session: Session, container: Container, email: str, role: StaffRole, now: datetime
) -> uuid.UUID:
    keys = container.vault.keys
    member = find_staff(session, keys, email=email, now=now)
    if member is None:
        add_staff(session, keys, container.hasher, email=email, roles=[role], now=now)
        member = find_staff(session, keys, email=email, now=now)
        assert member is not None
    return member.id


def _item(
    session: Session,
    household_id: uuid.UUID,
    profile_id: uuid.UUID | None,
    kinds: tuple[ItemKind, ...],
    private: list[str],
) -> uuid.UUID | None:
    """The newest primary item of the first of `kinds` the profile has, from no camera in
    a never-reviewable zone."""
    if profile_id is None:
        return None
    for kind in kinds:
        found = _newest(session, household_id, profile_id, kind, private)
        if found is not None:
            return found
    return None


def _newest(
    session: Session,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    kind: ItemKind,
    private: list[str],
) -> uuid.UUID | None:
    return session.scalar(
        select(MediaItem.id)
        .outerjoin(
            Device,
            (Device.household_id == MediaItem.household_id) & (Device.id == MediaItem.device_id),
        )
        .where(
            MediaItem.household_id == household_id,
            MediaItem.profile_id == profile_id,
            MediaItem.kind == kind,
            MediaItem.state == ItemState.ACTIVE,
            MediaItem.source_item_id.is_(None),
            (Device.zone.is_(None)) | (Device.zone.not_in(private)),
        )
        .order_by(MediaItem.captured_at.desc())
        .limit(1)
    )
