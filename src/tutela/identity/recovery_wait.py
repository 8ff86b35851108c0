"""The delayed path of account recovery, and the reset both paths end in (R5, R6, S4).

An account with a second factor that recovers without presenting it (or a recovery code)
does not get its new password at once: the reset waits `TUTELA_RECOVERY_DELAY_DAYS`,
announced by email and in the console, and its owner can cancel it with the link in the
notice or from a signed-in session. When the wait is over a worker pass applies it: the
new password, the second factors removed (they are what was lost), every session ended
and every device forgotten. Someone who only has the mailbox therefore needs the owner
to stay silent for the whole wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import Gone, NotAuthenticated
from tutela.households.models import Account
from tutela.identity import service as sessions
from tutela.identity.models import (
    Factor,
    PasswordCredential,
    RecoveryCode,
    SignInChallenge,
)
from tutela.identity.owners import Owner, record_by
from tutela.identity.recovery_models import AccountRecovery, RecoveryState
from tutela.notices.service import NoticeKind, enqueue
from tutela.vault.keystore import KeyStore

log = logging.getLogger("tutela.identity")

CANCEL_PREFIX = "tsx_"
MAX_TOKEN_CHARS = 100


@dataclass(frozen=True)
class PendingReset:
    """A delayed reset waiting for its date, as its owner sees it."""

    id: str
    requested_at: datetime
    delay_until: datetime


def owner_of(session: Session, row: AccountRecovery) -> Owner:
    account = session.get(Account, (row.household_id, row.account_id))
    if account is None:
        raise NotAuthenticated("This recovery link is not valid.", code="recovery_link_invalid")
    return Owner.account(account.household_id, account.id, account.profile_id)


def _where_owner(owner: Owner) -> list[ColumnElement[bool]]:
    return [
        AccountRecovery.household_id == owner.household_id,
        AccountRecovery.account_id == owner.id,
    ]


def delay(
    session: Session,
    keys: KeyStore,
    row: AccountRecovery,
    owner: Owner,
    *,
    new_password_hash: str,
    days: int,
    origin: str,
    where: dict[str, str],
    now: datetime,
) -> datetime | None:
    """Turn a sent link into a waiting reset; None if another request used it first."""
    until = now + timedelta(days=days)
    cancel = sessions.new_token(CANCEL_PREFIX)
    claimed = session.execute(
        update(AccountRecovery)
        .where(AccountRecovery.id == row.id, AccountRecovery.state == RecoveryState.SENT)
        .values(
            state=RecoveryState.DELAYED,
            used_at=now,
            new_password_hash=new_password_hash,
            delay_until=until,
            cancel_hash=sessions.token_hash(cancel),
        )
    )
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    # One waiting reset per account: a newer one replaces (never shortens) the older.
    session.execute(
        update(AccountRecovery)
        .where(
            *_where_owner(owner),
            AccountRecovery.id != row.id,
            AccountRecovery.state == RecoveryState.DELAYED,
        )
        .values(state=RecoveryState.CANCELLED, cancelled_at=now, new_password_hash=None)
    )
    record_by(session, owner, AuditTag.RECOVERY_DELAYED, now=now, subject=f"recovery:{row.id}")
    enqueue(
        session,
        keys,
        kind=NoticeKind.RECOVERY_DELAYED,
        owner=owner,
        params={
            "at": now.isoformat(),
            "until": until.isoformat(),
            "link": f"{origin}/recover/cancel#{cancel}",
            **where,
        },
        now=now,
    )
    return until


def pending(session: Session, owner: Owner) -> PendingReset | None:
    """The owner's waiting reset, if any (the console's notice and the API's answer)."""
    row = session.scalar(
        select(AccountRecovery)
        .where(*_where_owner(owner), AccountRecovery.state == RecoveryState.DELAYED)
        .order_by(AccountRecovery.created_at.desc())
        .limit(1)
    )
    if row is None or row.delay_until is None or row.used_at is None:
        return None
    return PendingReset(id=str(row.id), requested_at=row.used_at, delay_until=row.delay_until)


def _cancel_rows(
    session: Session,
    keys: KeyStore,
    owner: Owner,
    rows: list[AccountRecovery],
    *,
    actor: str,
    now: datetime,
) -> int:
    done = 0
    for row in rows:
        cancelled = session.execute(
            update(AccountRecovery)
            .where(AccountRecovery.id == row.id, AccountRecovery.state == RecoveryState.DELAYED)
            .values(state=RecoveryState.CANCELLED, cancelled_at=now, new_password_hash=None)
        )
        done += int(getattr(cancelled, "rowcount", 0) or 0)
    if done:
        record(
            session,
            tag=AuditTag.RECOVERY_CANCELLED,
            actor=actor,
            now=now,
            household_id=owner.household_id,
        )
        enqueue(
            session,
            keys,
            kind=NoticeKind.RECOVERY_CANCELLED,
            owner=owner,
            params={"at": now.isoformat()},
            now=now,
        )
    return done


def cancel_by_token(session: Session, keys: KeyStore, *, token: str, now: datetime) -> None:
    """The cancel link of the notice: the waiting reset ends, nothing changed (R6)."""
    row = None
    if token.startswith(CANCEL_PREFIX) and len(token) <= MAX_TOKEN_CHARS:
        row = session.scalar(
            select(AccountRecovery).where(AccountRecovery.cancel_hash == sessions.token_hash(token))
        )
    if row is None:
        raise NotAuthenticated("This cancel link is not valid.", code="recovery_link_invalid")
    if row.state != RecoveryState.DELAYED:
        raise Gone(
            "This reset is no longer waiting: it was cancelled or has completed.",
            code="recovery_link_used",
        )
    owner = owner_of(session, row)
    if not _cancel_rows(session, keys, owner, [row], actor="recovery-cancel-link", now=now):
        raise Gone("This reset is no longer waiting.", code="recovery_link_used")
    session.commit()


def cancel_pending(session: Session, keys: KeyStore, *, owner: Owner, now: datetime) -> int:
    """A signed-in owner cancels every waiting reset of the account."""
    rows = list(
        session.scalars(
            select(AccountRecovery).where(
                *_where_owner(owner),
                AccountRecovery.state == RecoveryState.DELAYED,
            )
        )
    )
    done = _cancel_rows(session, keys, owner, rows, actor=owner.ref, now=now)
    session.commit()
    return done


def apply_reset(
    session: Session,
    keys: KeyStore,
    row: AccountRecovery,
    owner: Owner,
    *,
    new_password_hash: str,
    remove_factors: bool,
    where: dict[str, str],
    now: datetime,
) -> None:
    """The new password; every session ended, every device forgotten, every pending
    sign-in closed, every other link dead; a notice. The caller commits."""
    credential = session.get(PasswordCredential, (owner.household_id, owner.id))
    if credential is None:
        raise NotAuthenticated("This recovery link is not valid.", code="recovery_link_invalid")
    credential.hash = new_password_hash
    credential.updated_at = now
    credential.must_change = False
    if remove_factors:
        session.execute(delete(Factor).where(owner.where(Factor)))
        session.execute(delete(RecoveryCode).where(owner.where(RecoveryCode)))
    sessions.end_all(session, owner=owner, now=now)
    session.execute(
        update(SignInChallenge)
        .where(owner.where(SignInChallenge), SignInChallenge.consumed_at.is_(None))
        .values(consumed_at=now)
    )
    session.execute(
        update(AccountRecovery)
        .where(
            *_where_owner(owner),
            AccountRecovery.id != row.id,
            AccountRecovery.state.in_([RecoveryState.SENT, RecoveryState.DELAYED]),
        )
        .values(state=RecoveryState.EXPIRED, new_password_hash=None)
    )
    session.execute(
        update(AccountRecovery)
        .where(AccountRecovery.id == row.id)
        .values(state=RecoveryState.COMPLETED, completed_at=now, new_password_hash=None)
    )
    record_by(
        session,
        owner,
        AuditTag.RECOVERY_COMPLETED,
        now=now,
        subject=f"recovery:{row.id}" + (":factors-removed" if remove_factors else ""),
    )
    params = {"at": now.isoformat(), **where}
    if remove_factors:
        params["factor"] = "removed"
    enqueue(session, keys, kind=NoticeKind.RECOVERY_COMPLETED, owner=owner, params=params, now=now)


def complete_due(
    open_session: Callable[[], Session], keys: KeyStore, *, now: datetime, limit: int = 100
) -> int:
    """A worker pass: apply the waiting resets whose date has come. Idempotent; on
    PostgreSQL several workers share the rows (`FOR UPDATE SKIP LOCKED`)."""
    done = 0
    with open_session() as session:
        query = (
            select(AccountRecovery)
            .where(
                AccountRecovery.state == RecoveryState.DELAYED,
                AccountRecovery.delay_until <= now,
            )
            .order_by(AccountRecovery.delay_until)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for row in list(session.scalars(query)):
            new_hash = row.new_password_hash
            claimed = session.execute(
                update(AccountRecovery)
                .where(AccountRecovery.id == row.id, AccountRecovery.state == RecoveryState.DELAYED)
                .values(state=RecoveryState.COMPLETED)
            )
            if getattr(claimed, "rowcount", 0) != 1 or new_hash is None:
                continue
            try:
                owner = owner_of(session, row)
            except NotAuthenticated:
                continue  # the account is gone (erased): nothing to reset
            apply_reset(
                session,
                keys,
                row,
                owner,
                new_password_hash=new_hash,
                remove_factors=True,
                where={},
                now=now,
            )
            done += 1
        session.commit()
    if done:
        log.info("completed %d delayed account recoveries", done)
    return done
