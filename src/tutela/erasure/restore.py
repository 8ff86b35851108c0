"""After a backup of the main database is restored: re-apply the erasures it predates (S8).

A restored backup brings back rows of subjects erased after it was taken. Their keys are
not back (the key store is a database apart, and is never restored over destroyed keys),
so nothing of them is readable; still, their rows and any restored blobs must go again.
The tombstones in the key store name every erased subject by a keyed digest: each
household, profile and item of the restored database is looked up there, and what
matches is erased again through the engine, with a receipt like any erasure.

Restored notices come first: a notice queued before the backup to a guardian, naming a
child erased since, would otherwise be mailed by the next worker pass (the guardian's
key still opens it). Every outbox row to an erased household or account, or about an
erased profile, is deleted with its mailed copy before any erasure is requested; the
delivery worker refuses such a notice too, should one be claimed before this runs.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import delete, select

from tutela.audit.service import AuditTag, record
from tutela.container import Container
from tutela.db.engine import keyset_after
from tutela.erasure.erased import tombstoned
from tutela.erasure.models import RequesterKind, ScopeKind
from tutela.erasure.scope import Requester, Scope
from tutela.households.models import Household, Profile
from tutela.notices.models import OutboxMessage
from tutela.vault.models import MediaItem

RESTORE = Requester(RequesterKind.RESTORE_CHECK, "operator:restore-check")
PAGE = 5000


@dataclass
class RestoreReport:
    dry_run: bool
    households: int = 0
    profiles: int = 0
    items: int = 0
    notices: int = 0
    """Restored notices to or about erased subjects, purged before any could be sent."""
    requests: list[uuid.UUID] = field(default_factory=list)

    @property
    def found(self) -> int:
        return self.households + self.profiles + self.items + self.notices


def _purge_notices(
    container: Container, erased_households: set[uuid.UUID], *, dry_run: bool
) -> int:
    """Delete restored outbox rows to an erased household or account, or about an erased
    profile, with their mailed copies; returns how many (found, on a dry run)."""
    stores, keys, now = container.stores, container.vault.keys, container.clock.now()
    purged = 0
    last: uuid.UUID | None = None
    while True:
        with stores.session() as session:
            query = (
                select(
                    OutboxMessage.id,
                    OutboxMessage.household_id,
                    OutboxMessage.account_id,
                    OutboxMessage.about_profile_id,
                )
                .where(OutboxMessage.household_id.is_not(None))
                .order_by(OutboxMessage.id)
                .limit(PAGE)
            )
            if last is not None:
                query = query.where(OutboxMessage.id > last)
            page = session.execute(query).all()
            if not page:
                return purged
            last = page[-1].id
            accounts = tombstoned(
                stores, keys, "account", {r.account_id for r in page if r.account_id}, now=now
            )
            profiles = tombstoned(
                stores,
                keys,
                "profile",
                {r.about_profile_id for r in page if r.about_profile_id},
                now=now,
            )
            doomed = [
                r.id
                for r in page
                if r.household_id in erased_households
                or r.account_id in accounts
                or r.about_profile_id in profiles
            ]
            purged += len(doomed)
            if dry_run or not doomed:
                continue
            container.notices.discard([str(i) for i in doomed])
            session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(doomed)))
            session.commit()


def restore_check(container: Container, *, dry_run: bool = False) -> RestoreReport:
    """Find restored rows of erased subjects and erase them again (unless `dry_run`)."""
    now = container.clock.now()
    stores, keys = container.stores, container.vault.keys
    report = RestoreReport(dry_run=dry_run)
    with stores.session() as session:
        household_ids = list(session.scalars(select(Household.id)))
        profiles = [tuple(r) for r in session.execute(select(Profile.household_id, Profile.id))]
    erased_households = tombstoned(stores, keys, "household", household_ids, now=now)
    erased_profiles = {
        (h, p)
        for h, p in profiles
        if h not in erased_households and p in tombstoned(stores, keys, "profile", [p], now=now)
    }
    report.households = len(erased_households)
    report.profiles = len(erased_profiles)
    report.notices = _purge_notices(container, erased_households, dry_run=dry_run)
    gone_profiles = {p for _, p in erased_profiles}
    items: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = defaultdict(list)
    last: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        with stores.session() as session:
            query = select(MediaItem.household_id, MediaItem.id, MediaItem.profile_id).order_by(
                MediaItem.household_id, MediaItem.id
            )
            if last is not None:
                query = query.where(keyset_after(MediaItem.household_id, MediaItem.id, last))
            page = session.execute(query.limit(PAGE)).all()
        if not page:
            break
        last = (page[-1][0], page[-1][1])
        candidates = [
            r for r in page if r[0] not in erased_households and r[2] not in gone_profiles
        ]
        erased = tombstoned(stores, keys, "item", [r[1] for r in candidates], now=now)
        for household_id, item_id, profile_id in candidates:
            if item_id in erased:
                items[(household_id, profile_id)].append(item_id)
    report.items = sum(len(v) for v in items.values())
    if dry_run:
        return report
    scopes = [Scope(ScopeKind.HOUSEHOLD, h) for h in sorted(erased_households)]
    scopes += [Scope(ScopeKind.PROFILE, h, profile_id=p) for h, p in sorted(erased_profiles)]
    scopes += [
        Scope(ScopeKind.ITEMS, h, profile_id=p, item_ids=tuple(ids))
        for (h, p), ids in sorted(items.items())
    ]
    for scope in scopes:
        report.requests.append(container.erasure.request(scope, RESTORE).id)
    with stores.session() as session:
        record(
            session,
            tag=AuditTag.BACKUP_RESTORE_CHECKED,
            actor=RESTORE.ref,
            now=now,
            subject=f"found:{report.found}",
        )
        session.commit()
    return report
