"""Use cases of access transparency: the `AccessTransparency` port that records an
employee's look at a customer's media and lists them for the customer (R3, R9), and the
publication of each version of the staff-access notice (R9).

`record_access` is the contract the access-control part fills: it adds the row to the
caller's transaction and does not commit, so the decision, its audit entry, this record
and the read commit together (no record, no read). It refuses (and so the read must be
refused) a look the published staff-access policy does not allow.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tutela.core.errors import ConfigurationError, Forbidden, InvalidInput, NotFound
from tutela.core.ids import uuid7
from tutela.households.models import CameraZone, Device, Profile
from tutela.identity.models import StaffMember
from tutela.identity.staff import StaffRole
from tutela.transparency import notice as notice_text
from tutela.transparency import rules
from tutela.transparency.models import StaffAccessNotice, StaffMediaAccess
from tutela.transparency.policy import StaffAccessPolicy
from tutela.transparency.rules import AccessPurpose, Target
from tutela.vault import rules as vault_rules
from tutela.vault.keystore import KeyStore
from tutela.vault.models import ItemKind, ItemState, MediaItem


@dataclass(frozen=True)
class AccessRecord:
    """One look as its household is told: never the employee's name, email or id."""

    id: uuid.UUID
    profile_id: uuid.UUID
    accessed_at: datetime
    purpose: AccessPurpose
    purpose_title: str
    ticket: str | None
    staff_role: str
    staff_title: str
    staff_pseudonym: str
    policy_id: str
    decision_id: uuid.UUID | None
    target: Target
    item_id: uuid.UUID | None
    item_kind: str | None
    item_captured_at: datetime | None

    @property
    def who(self) -> str:
        """ "Trust & Safety reviewer #4f2a"."""
        return f"{self.staff_title} #{self.staff_pseudonym}"

    @property
    def item_erased(self) -> bool:
        """A look at one item that has since been erased: only the look is left."""
        return self.target is Target.ITEM and self.item_kind is None


@dataclass(frozen=True)
class AccessPage:
    records: list[AccessRecord]
    next_cursor: str | None


class AccessTransparency(Protocol):
    """The port between employees' access to customer media and what customers see."""

    def record_access(
        self,
        session: Session,
        *,
        household_id: uuid.UUID,
        profile_id: uuid.UUID,
        staff_id: uuid.UUID,
        staff_role: str,
        purpose: str,
        policy_id: str,
        accessed_at: datetime,
        item_id: uuid.UUID | None = None,
        ticket: str | None = None,
        decision_id: uuid.UUID | None = None,
    ) -> uuid.UUID: ...

    def accesses_for(
        self,
        session: Session,
        *,
        household_id: uuid.UUID,
        profile_ids: frozenset[uuid.UUID],
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AccessPage: ...


class SqlAccessTransparency:
    """`AccessTransparency` over the main store's `staff_media_accesses`."""

    def __init__(self, keys: KeyStore, policy: StaffAccessPolicy) -> None:
        self.keys = keys
        self.policy = policy

    def record_access(
        self,
        session: Session,
        *,
        household_id: uuid.UUID,
        profile_id: uuid.UUID,
        staff_id: uuid.UUID,
        staff_role: str,
        purpose: str,
        policy_id: str,
        accessed_at: datetime,
        item_id: uuid.UUID | None = None,
        ticket: str | None = None,
        decision_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Add the record of one look to `session` (not committed) and return its id.

        `item_id` names the item looked at; None is a look at the profile's list of
        items. Raises `InvalidInput` (`unknown_access_purpose`, `unknown_role`,
        `invalid_ticket`, `ticket_required`, `invalid_policy_id`), `NotFound`
        (`profile_not_found`, `item_not_found`, `staff_not_found`) or `Forbidden`
        (`role_not_held`, `access_not_in_policy`, `private_zone`): the look is then not
        allowed, and nothing is added.
        """
        chosen = rules.parse_purpose(purpose)
        if staff_role not in StaffRole._value2member_map_:
            raise InvalidInput("Unknown staff role.", code="unknown_role")
        ticket = rules.check_ticket(ticket)
        policy_id = rules.check_policy_id(policy_id)
        if accessed_at.tzinfo is None:
            raise InvalidInput("The time of the look needs a time zone.", code="invalid_input")
        if session.get(Profile, (household_id, profile_id)) is None:
            raise NotFound("No such profile.", code="profile_not_found")
        member = session.get(StaffMember, staff_id)
        if member is None:
            raise NotFound("No such employee.", code="staff_not_found")
        if staff_role not in member.roles.split():
            raise Forbidden("The employee does not hold this role.", code="role_not_held")
        kind: ItemKind | None = None
        if item_id is not None:
            item = session.get(MediaItem, (household_id, item_id))
            if item is None or item.profile_id != profile_id or item.state != ItemState.ACTIVE:
                raise NotFound("No such item.", code="item_not_found")
            kind = ItemKind(item.kind)
            self._check_zone(session, item)
        if not self.policy.allows(staff_role, chosen, kind):
            raise Forbidden(
                "The staff-access policy does not allow this look.", code="access_not_in_policy"
            )
        if ticket is None and self.policy.requires_ticket(chosen):
            raise InvalidInput("This purpose needs a ticket reference.", code="ticket_required")
        key = self.keys.service_key(rules.PSEUDONYM_KEY, now=accessed_at)
        record_id = uuid7()
        session.add(
            StaffMediaAccess(
                household_id=household_id,
                id=record_id,
                profile_id=profile_id,
                target=(Target.ITEM if item_id is not None else Target.PROFILE).value,
                item_id=item_id,
                staff_id=staff_id,
                staff_role=staff_role,
                staff_pseudonym=rules.pseudonym(key, household_id=household_id, staff_id=staff_id),
                purpose=chosen.value,
                ticket=ticket,
                policy_id=policy_id,
                decision_id=decision_id,
                accessed_at=accessed_at,
            )
        )
        session.flush()
        return record_id

    def _check_zone(self, session: Session, item: MediaItem) -> None:
        """A camera in a private zone is never reviewable, nor anything derived from it."""
        source = item
        if item.source_item_id is not None:
            parent = session.get(MediaItem, (item.household_id, item.source_item_id))
            source = parent or item
        if source.device_id is None:
            return
        device = session.get(Device, (item.household_id, source.device_id))
        private = {z.value for z in self.policy.never_reviewable_zones}
        if device is not None and device.zone is not None and device.zone in private:
            zone = CameraZone(device.zone).value.replace("_", " ")
            raise Forbidden(
                f"Recordings from a camera in the {zone} are never shown to an employee.",
                code="private_zone",
            )

    def accesses_for(
        self,
        session: Session,
        *,
        household_id: uuid.UUID,
        profile_ids: frozenset[uuid.UUID],
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AccessPage:
        """The looks at these profiles of this household, newest first, in cursor pages
        that stay stable as new looks are recorded. `since` is inclusive, `until` not."""
        if not profile_ids:
            return AccessPage(records=[], next_cursor=None)
        access = StaffMediaAccess
        query = (
            select(access, MediaItem.kind, MediaItem.captured_at, MediaItem.state)
            .outerjoin(
                MediaItem,
                and_(
                    MediaItem.household_id == access.household_id,
                    MediaItem.id == access.item_id,
                ),
            )
            .where(access.household_id == household_id, access.profile_id.in_(profile_ids))
        )
        if since is not None:
            query = query.where(access.accessed_at >= since)
        if until is not None:
            query = query.where(access.accessed_at < until)
        if cursor is not None:
            at, last_id = vault_rules.decode_cursor(cursor)
            query = query.where(tuple_(access.accessed_at, access.id) < tuple_(at, last_id))
        rows = session.execute(
            query.order_by(access.accessed_at.desc(), access.id.desc()).limit(limit + 1)
        ).all()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][0]
            next_cursor = vault_rules.encode_cursor(last.accessed_at, last.id)
        return AccessPage(records=[self._record(*row) for row in rows], next_cursor=next_cursor)

    def _record(
        self,
        row: StaffMediaAccess,
        kind: str | None,
        captured_at: datetime | None,
        state: str | None,
    ) -> AccessRecord:
        live = state == ItemState.ACTIVE
        purpose = AccessPurpose(row.purpose)
        described = self.policy.purposes.get(purpose)
        return AccessRecord(
            id=row.id,
            profile_id=row.profile_id,
            accessed_at=row.accessed_at,
            purpose=purpose,
            purpose_title=described.title if described else purpose.value,
            ticket=row.ticket,
            staff_role=row.staff_role,
            staff_title=self.policy.role_title(row.staff_role),
            staff_pseudonym=row.staff_pseudonym,
            policy_id=row.policy_id,
            decision_id=row.decision_id,
            target=Target(row.target),
            item_id=row.item_id if live else None,
            item_kind=kind if live else None,
            item_captured_at=captured_at if live else None,
        )

    def prune(self, session: Session, *, now: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` records older than the policy keeps them (R3, R9); commits.
        Returns how many went."""
        cutoff = now - self.policy.records_kept
        expired = (
            select(StaffMediaAccess.household_id, StaffMediaAccess.id)
            .where(StaffMediaAccess.accessed_at < cutoff)
            .order_by(StaffMediaAccess.accessed_at)
            .limit(limit)
        )
        keys = [(h, i) for h, i in session.execute(expired)]
        for household_id, record_id in keys:
            session.execute(
                delete(StaffMediaAccess).where(
                    StaffMediaAccess.household_id == household_id,
                    StaffMediaAccess.id == record_id,
                )
            )
        session.commit()
        return len(keys)


# --- the published notice -----------------------------------------------------------


@dataclass(frozen=True)
class PublishedNotice:
    version: int
    policy_sha256: str
    published_at: datetime
    document: dict[str, Any]
    html: str

    @classmethod
    def of(cls, row: StaffAccessNotice) -> PublishedNotice:
        return cls(
            version=row.version,
            policy_sha256=row.policy_sha256,
            published_at=row.published_at,
            document=json.loads(row.document),
            html=row.html,
        )


def publish_notice(
    session: Session, policy: StaffAccessPolicy, *, now: datetime
) -> PublishedNotice:
    """The notice of the policy in force, published on first use and kept as published (R9).

    A version is published once: a policy whose version was published from a different
    policy raises `ConfigurationError` (`staff_access_version_reused`), and so does one
    older than the latest published version that was never published itself
    (`staff_access_version_behind`). Commits when it publishes.
    """
    row = session.get(StaffAccessNotice, policy.version)
    if row is None:
        latest = session.scalar(select(func.max(StaffAccessNotice.version)))
        if latest is not None and latest > policy.version:
            raise ConfigurationError(
                "The staff-access policy's version is older than the published notice.",
                code="staff_access_version_behind",
            )
        document = notice_text.build_document(policy, published_at=now)
        session.add(
            StaffAccessNotice(
                version=policy.version,
                policy_sha256=policy.sha256,
                published_at=now,
                document=json.dumps(document, ensure_ascii=False, sort_keys=True),
                html=notice_text.render_html(document),
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # another process published it first
        row = session.get(StaffAccessNotice, policy.version)
        assert row is not None
    if row.policy_sha256 != policy.sha256:
        raise ConfigurationError(
            "The staff-access policy changed without a new version number.",
            code="staff_access_version_reused",
        )
    return PublishedNotice.of(row)


def published_notice(session: Session, *, version: int) -> PublishedNotice:
    """One published version; `NotFound` (`notice_version_not_found`) otherwise."""
    row = session.get(StaffAccessNotice, version)
    if row is None:
        raise NotFound("No such version of the notice.", code="notice_version_not_found")
    return PublishedNotice.of(row)


def published_versions(session: Session) -> list[tuple[int, datetime, str]]:
    """Every published version: (version, published at, policy digest), newest first."""
    rows = session.execute(
        select(
            StaffAccessNotice.version,
            StaffAccessNotice.published_at,
            StaffAccessNotice.policy_sha256,
        ).order_by(StaffAccessNotice.version.desc())
    ).all()
    return [(v, at, sha) for v, at, sha in rows]
