"""Asking for account recovery: the throttle, then one emailed link per account per window
(R6, S2). See `recovery` for the whole flow."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import TooManyAttempts
from tutela.core.ids import uuid7
from tutela.identity import service as sessions
from tutela.identity.logins import Client
from tutela.identity.owners import Owner, record_by
from tutela.identity.recovery_models import AccountRecovery, RecoveryState
from tutela.identity.second_step import SecondStep
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue
from tutela.settings import Settings

log = logging.getLogger("tutela.identity")

LINK_PREFIX = "tsr_"


@dataclass
class RecoveryRequests:
    """The request step. `gate` is the sign-in service recovery builds on (its throttle,
    hasher, breach checker, key store and factor checks); `open_session` opens a
    database session for work done after the answer and for the worker's pass."""

    gate: SecondStep
    open_session: Callable[[], Session]

    @property
    def _settings(self) -> Settings:
        return self.gate.settings

    # -- 1. request ----------------------------------------------------------------------

    def request(self, session: Session, *, email: str, client: Client, now: datetime) -> bool:
        """`admit`, then `send_link`, in one go; True if a link was queued."""
        self.admit(session, email=email, client=client, now=now)
        return self.send_link(session, email=email, client=client, now=now)

    def admit(self, session: Session, *, email: str, client: Client, now: datetime) -> None:
        """The throttle, before anything is looked up: every request counts against its
        source and network, whatever the address, so its answer says nothing about
        accounts. Raises TooManyAttempts (429) when the source is slowed down."""
        gate = self.gate
        index = gate._account_key(email, staff=False, now=now).partition(":")[2]
        attempt = Attempt(account="r:" + index, source=client.address)
        ts = now.timestamp()
        verdict = gate.throttle.check(attempt, ts)
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many requests from your network. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        if gate.throttle.record_failure(attempt, ts):
            gate._defended_alert(session, now=now)
            session.commit()

    def send_link(self, session: Session, *, email: str, client: Client, now: datetime) -> bool:
        """Email a recovery link if `email` has a customer account; True if one was queued.

        The caller answers the same whatever this returns (never reveal an account).
        """
        login = self.gate._login(session, email, staff=False, now=now)
        owner = login.owner if login is not None else None
        record(
            session,
            tag=AuditTag.RECOVERY_REQUESTED,
            actor=owner.ref if owner else "anonymous",
            now=now,
            household_id=owner.household_id if owner else None,
        )
        if owner is None:
            session.commit()
            return False
        self._lock_account(session, owner)
        window = timedelta(minutes=self._settings.recovery_email_minutes)
        recent = session.scalar(
            select(AccountRecovery.id)
            .where(
                AccountRecovery.household_id == owner.household_id,
                AccountRecovery.account_id == owner.id,
                AccountRecovery.created_at > now - window,
            )
            .limit(1)
        )
        if recent is not None:
            session.commit()
            return False
        self._send(session, owner, client=client, now=now)
        session.commit()
        return True

    def send_link_later(
        self, *, email: str, client: Client, now: datetime, deliver: Callable[[], object]
    ) -> None:
        """`send_link` after the answer has gone out, in a session of its own: the answer
        then takes the same time whether or not the address has an account. Never raises."""
        try:
            with self.open_session() as session:
                queued = self.send_link(session, email=email, client=client, now=now)
        except Exception as exc:
            log.warning("recovery link not queued: %s", type(exc).__name__)
            return
        if queued:
            deliver()

    def _lock_account(self, session: Session, owner: Owner) -> None:
        """Held until commit: one request per account at a time checks and inserts."""
        if session.get_bind().dialect.name == "postgresql":
            key = int.from_bytes(owner.id.bytes[:8], "big", signed=True)
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        else:  # SQLite: a first write takes the write lock for the whole transaction
            session.execute(
                update(AccountRecovery)
                .where(
                    AccountRecovery.household_id == owner.household_id,
                    AccountRecovery.account_id == owner.id,
                    AccountRecovery.state == RecoveryState.SENT,
                )
                .values(state=RecoveryState.SENT)
            )

    def _send(self, session: Session, owner: Owner, *, client: Client, now: datetime) -> None:
        settings = self._settings
        # One live link per account: a new one replaces the older.
        session.execute(
            update(AccountRecovery)
            .where(
                AccountRecovery.household_id == owner.household_id,
                AccountRecovery.account_id == owner.id,
                AccountRecovery.state == RecoveryState.SENT,
            )
            .values(state=RecoveryState.EXPIRED)
        )
        token = sessions.new_token(LINK_PREFIX)
        row = AccountRecovery(
            id=uuid7(),
            household_id=owner.household_id,
            account_id=owner.id,
            token_hash=sessions.token_hash(token),
            state=RecoveryState.SENT,
            created_at=now,
            expires_at=now + timedelta(minutes=settings.recovery_link_minutes),
            attempts=0,
        )
        session.add(row)
        session.flush()
        enqueue(
            session,
            self.gate.keys,
            kind=NoticeKind.PASSWORD_RESET_LINK,
            owner=owner,
            params={
                "at": now.isoformat(),
                "link": f"{settings.origin}/recover#{token}",
                "minutes": str(settings.recovery_link_minutes),
                **client.where(),
            },
            now=now,
        )
        record_by(
            session, owner, AuditTag.RECOVERY_LINK_SENT, now=now, subject=f"recovery:{row.id}"
        )
