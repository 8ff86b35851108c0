"""Use cases of retention: automatic-deletion choices (A6, C9), who may make them, and a
guardian keeping an inactive child's profile (A3)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Conflict, InvalidInput, NotFound
from tutela.households import service as households
from tutela.households.models import (
    AccountRole,
    Guardianship,
    Profile,
    ProfileKind,
    ProfileState,
)
from tutela.retention.models import AutoDeleteChoice, InactiveChild
from tutela.retention.policy import (
    AUTO_DELETE_CHOICES,
    CHILD_AUTO_DELETE_CHOICES,
    Policy,
    check_auto_delete_choice,
)
from tutela.vault.models import ItemKind

PENDING = "pending"
KEPT = "kept"
REACTIVATED = "reactivated"
ERASING = "erasing"
OPEN_OUTCOMES = (PENDING, ERASING)


def effective_max_age(
    policy: Policy, subject: ProfileKind | str, kind: ItemKind | str, choice: str | None
) -> timedelta:
    """How long an item of `kind` about a `subject` is kept, given the customer's choice.

    No choice: the policy rule's maximum age. A choice can only shorten it (A6, C9): the
    result is the shorter of the chosen interval and the rule. "never" (adults only)
    therefore means "until the policy's maximum age", which is what the published
    notice promises (A7: "nothing is kept beyond the maximum ages above"). A stored
    choice that is unknown, or "never" on a child's profile, falls back to the rule.
    """
    rule = policy.max_age(kind, subject)
    chosen = AUTO_DELETE_CHOICES.get(choice) if choice is not None else None
    if chosen is None:
        return rule
    return min(chosen, rule)


def decided_by_choice(
    policy: Policy, subject: ProfileKind | str, kind: ItemKind | str, choice: str | None
) -> bool:
    """True when the customer's choice, not the policy rule, sets the age (A6)."""
    return effective_max_age(policy, subject, kind, choice) < policy.max_age(kind, subject)


# --- who may manage a profile's retention ----------------------------------------------


def manageable_profile(
    session: Session,
    *,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    account_id: uuid.UUID,
    own_profile_id: uuid.UUID,
    role: str,
) -> Profile:
    """The profile, if this account may see and set its retention; else NotFound.

    The adult for their own profile, a guardian for their child (C6), and the
    household's owner for the household's children. Another adult's profile is not
    visible even to the owner (living together is not consent), and a profile under
    erasure is read by nobody: both answer 404, as does another household's id.
    """
    profile = session.get(Profile, (household_id, profile_id))
    if profile is None or profile.state != ProfileState.ACTIVE:
        raise NotFound("No such profile.", code="profile_not_found")
    visible = households.visible_profile_ids(
        session, household_id=household_id, account_id=account_id, own_profile_id=own_profile_id
    )
    if profile_id in visible:
        return profile
    if role == AccountRole.OWNER and profile.kind == ProfileKind.CHILD:
        return profile
    raise NotFound("No such profile.", code="profile_not_found")


# --- automatic deletion (A6) ----------------------------------------------------------


def set_auto_delete(
    session: Session,
    *,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    kind: ItemKind | str,
    choice: str,
    actor: str,
    now: datetime,
) -> AutoDeleteChoice:
    """Set a profile's automatic deletion for one kind of item (A6); commits.

    A child's choice can never be "never" (`child_never_not_allowed`, C9). The choice is
    upserted, so two requests at once leave the later one, and audited.
    """
    try:
        item_kind = ItemKind(kind)
    except ValueError:
        raise InvalidInput("Unknown kind of data.", code="invalid_kind") from None
    profile = session.get(Profile, (household_id, profile_id))
    if profile is None or profile.state != ProfileState.ACTIVE:
        raise NotFound("No such profile.", code="profile_not_found")
    check_auto_delete_choice(choice, ProfileKind(profile.kind))
    values = {
        "household_id": household_id,
        "profile_id": profile_id,
        "kind": item_kind.value,
        "choice": choice,
        "set_by": actor[:80],
        "set_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(AutoDeleteChoice)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["household_id", "profile_id", "kind"],
            set_={"choice": choice, "set_by": actor[:80], "set_at": now},
        )
    )
    record(
        session,
        tag=AuditTag.AUTO_DELETE_SET,
        actor=actor[:80],
        now=now,
        household_id=household_id,
        subject=f"profile:{profile_id}",
    )
    session.commit()
    row = session.get(AutoDeleteChoice, (household_id, profile_id, item_kind.value))
    assert row is not None
    session.refresh(row)
    return row


# --- what a profile's retention is --------------------------------------------------------


@dataclass(frozen=True)
class KindRetention:
    kind: ItemKind
    policy_max_age: timedelta
    choice: str | None
    effective_max_age: timedelta
    decided_by: str
    """"policy" or "choice"."""


@dataclass(frozen=True)
class InactiveStatus:
    outcome: str
    identified_at: datetime
    last_active_at: datetime
    erase_after: datetime
    notified_at: datetime | None
    decided_at: datetime | None
    kept_by: str | None
    kept_how: str | None


@dataclass(frozen=True)
class RetentionView:
    profile_id: uuid.UUID
    profile_kind: ProfileKind
    kinds: tuple[KindRetention, ...]
    choices_offered: tuple[str, ...]
    inactive_child: InactiveStatus | None


def retention_view(session: Session, policy: Policy, *, profile: Profile) -> RetentionView:
    """Per kind: the policy's maximum age, the customer's choice and what applies (A6, C9);
    and the inactive-child rule's latest record for the profile (A1-A3)."""
    subject = ProfileKind(profile.kind)
    chosen = {
        row.kind: row.choice
        for row in session.scalars(
            select(AutoDeleteChoice).where(
                AutoDeleteChoice.household_id == profile.household_id,
                AutoDeleteChoice.profile_id == profile.id,
            )
        )
    }
    kinds = tuple(
        KindRetention(
            kind=kind,
            policy_max_age=policy.max_age(kind, subject),
            choice=chosen.get(kind.value),
            effective_max_age=effective_max_age(policy, subject, kind, chosen.get(kind.value)),
            decided_by=(
                "choice"
                if decided_by_choice(policy, subject, kind, chosen.get(kind.value))
                else "policy"
            ),
        )
        for kind in ItemKind
    )
    latest = session.scalars(
        select(InactiveChild)
        .where(
            InactiveChild.household_id == profile.household_id,
            InactiveChild.profile_id == profile.id,
        )
        .order_by(InactiveChild.identified_at.desc())
        .limit(1)
    ).first()
    return RetentionView(
        profile_id=profile.id,
        profile_kind=subject,
        kinds=kinds,
        choices_offered=(
            CHILD_AUTO_DELETE_CHOICES
            if subject is ProfileKind.CHILD
            else tuple(AUTO_DELETE_CHOICES)
        ),
        inactive_child=_status(latest) if latest is not None else None,
    )


def _status(row: InactiveChild) -> InactiveStatus:
    return InactiveStatus(
        outcome=row.outcome,
        identified_at=row.identified_at,
        last_active_at=row.last_active_at,
        erase_after=row.erase_after,
        notified_at=row.notified_at,
        decided_at=row.decided_at,
        kept_by=row.kept_by,
        kept_how=row.kept_how,
    )


# --- keeping an inactive child's profile (A3) -----------------------------------------------


def keep_inactive_child(
    session: Session,
    *,
    household_id: uuid.UUID,
    profile_id: uuid.UUID,
    guardian_account_id: uuid.UUID,
    how: str,
    now: datetime,
) -> InactiveStatus:
    """A guardian keeps an inactive child's profile: who, when and how are recorded (A3).

    Only a guardian of the child may (else NotFound: the profile is not theirs to see).
    Refused with Conflict `no_pending_inactivity` when the profile is not awaiting
    erasure under the inactive-child rule, including once its erasure has begun. The
    update is guarded on the row still being pending, so a sweep that claimed it for
    erasure first wins and the keep is refused, never silently lost. Commits.
    """
    guardian = session.scalar(
        select(Guardianship.guardian_account_id)
        .join(
            Profile,
            (Profile.household_id == Guardianship.household_id)
            & (Profile.id == Guardianship.child_profile_id),
        )
        .where(
            Guardianship.household_id == household_id,
            Guardianship.child_profile_id == profile_id,
            Guardianship.guardian_account_id == guardian_account_id,
            Profile.state == ProfileState.ACTIVE,
        )
    )
    if guardian is None:
        raise NotFound("No such profile.", code="profile_not_found")
    pending = session.scalars(
        select(InactiveChild)
        .where(
            InactiveChild.household_id == household_id,
            InactiveChild.profile_id == profile_id,
            InactiveChild.outcome == PENDING,
        )
        .order_by(InactiveChild.identified_at.desc())
        .limit(1)
    ).first()
    conflict = Conflict(
        "This profile is not awaiting erasure for inactivity.", code="no_pending_inactivity"
    )
    if pending is None:
        raise conflict
    actor = f"account:{guardian_account_id}"
    kept = session.execute(
        update(InactiveChild)
        .where(
            InactiveChild.household_id == household_id,
            InactiveChild.profile_id == profile_id,
            InactiveChild.identified_at == pending.identified_at,
            InactiveChild.outcome == PENDING,
        )
        .values(outcome=KEPT, decided_at=now, kept_by=actor, kept_how=how[:40])
        .execution_options(synchronize_session=False)
    )
    if getattr(kept, "rowcount", 0) != 1:
        session.rollback()
        raise conflict
    record(
        session,
        tag=AuditTag.INACTIVE_CHILD_KEPT,
        actor=actor,
        now=now,
        household_id=household_id,
        subject=f"profile:{profile_id}",
    )
    session.commit()
    session.refresh(pending)
    return _status(pending)
