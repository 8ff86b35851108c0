"""Account recovery ("forgot password") for customers (R5, R6, S1, S2, S4).

1. **Request** (`admit`, then `send_link` after the answer): throttled like a sign-in,
   per source and network; every request counts, whether or not the address has an
   account, and the answer is the same, in the same time. An account gets an emailed
   single-use link that expires (`TUTELA_RECOVERY_LINK_MINUTES`), at most one per
   `TUTELA_RECOVERY_EMAIL_MINUTES`: the check and the insert hold the
   account's lock (an advisory lock on PostgreSQL, the write lock on SQLite), so two
   simultaneous requests cannot send two emails.
2. **Open** (`start`): says whether a second factor is needed.
3. **Complete** (`complete`): a new password that passes NIST SP 800-63B's rules (S1).
   Without a second factor on the account, or with one presented (TOTP, recovery code,
   WebAuthn), the password changes at once, every session ends and every device is
   forgotten. An account with a factor that is not presented waits
   (`recovery_wait.delay`): the emailed link never bypasses a second factor. A wrong
   factor counts toward the account's failures (S2) and is announced (S4).

Employees have no self-service recovery (R4): their address gets the same answer, and
no email; their security team resets them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag
from tutela.core.errors import (
    Forbidden,
    Gone,
    InvalidCredentials,
    NotAuthenticated,
    TooManyAttempts,
)
from tutela.identity import factors, password_rules, recovery_wait
from tutela.identity import service as sessions
from tutela.identity.logins import MAX_FACTOR_TRIES, Client, Login
from tutela.identity.models import FactorKind
from tutela.identity.owners import Owner, record_by
from tutela.identity.recovery_models import AccountRecovery, RecoveryState
from tutela.identity.recovery_request import LINK_PREFIX, RecoveryRequests
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")


@dataclass(frozen=True)
class RecoveryStart:
    """What opening a link shows: a new-password form, with a factor field or not."""

    status: str  # "ready" | "delayed"
    factor_required: bool = False
    factors: list[str] = field(default_factory=list)
    webauthn_options: str | None = None
    delay_days: int = 0
    delay_until: datetime | None = None


@dataclass(frozen=True)
class RecoveryOutcome:
    status: str  # "recovered" | "delayed"
    delay_until: datetime | None = None


@dataclass
class Recovery(RecoveryRequests):
    """The recovery use cases: request (`RecoveryRequests`), open, complete, and the
    delayed path."""

    # -- 2. open -------------------------------------------------------------------------

    def _row(self, session: Session, token: str, now: datetime) -> AccountRecovery:
        row = None
        if token.startswith(LINK_PREFIX) and len(token) <= recovery_wait.MAX_TOKEN_CHARS:
            row = session.scalar(
                select(AccountRecovery).where(
                    AccountRecovery.token_hash == sessions.token_hash(token)
                )
            )
        if row is None:
            raise NotAuthenticated("This recovery link is not valid.", code="recovery_link_invalid")
        if row.state == RecoveryState.EXPIRED or (
            row.state == RecoveryState.SENT and row.expires_at <= now
        ):
            raise Gone(
                "This recovery link has expired; ask for a new one.", code="recovery_link_expired"
            )
        return row

    def _live(self, session: Session, token: str, now: datetime) -> AccountRecovery:
        row = self._row(session, token, now)
        if row.state != RecoveryState.SENT:
            raise Gone(
                "This recovery link was already used; ask for a new one if you need it.",
                code="recovery_link_used",
            )
        return row

    def start(self, session: Session, *, token: str, now: datetime) -> RecoveryStart:
        """What the link's page asks for: a new password, and a factor when there is one."""
        row = self._row(session, token, now)
        if row.state == RecoveryState.DELAYED:
            return RecoveryStart(status="delayed", delay_until=row.delay_until)
        row = self._live(session, token, now)
        owner = recovery_wait.owner_of(session, row)
        kinds = sorted({str(f.kind) for f in factors.list_factors(session, owner)})
        options: str | None = None
        if kinds and factors.recovery_codes_left(session, owner):
            kinds.append("recovery_code")
        if FactorKind.WEBAUTHN in kinds:
            row.webauthn_challenge, options = factors.authentication_options(
                session, owner, rp_id=self._settings.rp_id
            )
            session.commit()
        return RecoveryStart(
            status="ready",
            factor_required=bool(kinds),
            factors=kinds,
            webauthn_options=options,
            delay_days=self._settings.recovery_delay_days,
        )

    # -- 3. complete ---------------------------------------------------------------------

    def complete(
        self,
        session: Session,
        *,
        token: str,
        new_password: str,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        client: Client,
        now: datetime,
    ) -> RecoveryOutcome:
        """Reset the password now, or (a factor on the account, none presented) wait."""
        gate = self.gate
        row = self._live(session, token, now)
        owner = recovery_wait.owner_of(session, row)
        login = gate.login_of(session, owner)
        attempt = Attempt(
            account=gate._account_for_owner(session, login, now), source=client.address
        )
        ts = now.timestamp()
        verdict = gate.throttle.check(attempt, ts)
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many failed attempts from your network. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        email = gate._email(session, owner, now)
        normalised = password_rules.check_new_password(
            new_password, email=email, breaches=gate.breaches.within(session)
        )
        has_factor = factors.has_second_factor(session, owner)
        # Anything presented is checked: a malformed proof is a wrong one, not none.
        presented = any(proof is not None for proof in (code, recovery_code, webauthn))
        if has_factor and not presented:
            return self._wait(session, row, owner, normalised, client=client, now=now)
        if has_factor:
            self._check_factor(
                session,
                row,
                login,
                attempt,
                code=code,
                recovery_code=recovery_code,
                webauthn=webauthn,
                client=client,
                now=now,
            )
        new_hash = gate.hasher.hash(normalised)
        claimed = session.execute(
            update(AccountRecovery)
            .where(AccountRecovery.id == row.id, AccountRecovery.state == RecoveryState.SENT)
            .values(state=RecoveryState.COMPLETED, used_at=now)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            session.rollback()
            raise Gone("This recovery link was already used.", code="recovery_link_used")
        recovery_wait.apply_reset(
            session,
            gate.keys,
            row,
            owner,
            new_password_hash=new_hash,
            remove_factors=False,
            where=client.where(),
            now=now,
        )
        if has_factor:  # the mailbox and a factor: as good as a complete sign-in (S2)
            gate.throttle.reset_account(attempt)
        session.commit()
        return RecoveryOutcome(status="recovered")

    def _wait(
        self,
        session: Session,
        row: AccountRecovery,
        owner: Owner,
        normalised: str,
        *,
        client: Client,
        now: datetime,
    ) -> RecoveryOutcome:
        settings = self._settings
        if settings.recovery_delay_days == 0:
            raise Forbidden(
                "This account has a second sign-in step: present it, or a recovery code.",
                code="factor_required",
            )
        until = recovery_wait.delay(
            session,
            self.gate.keys,
            row,
            owner,
            new_password_hash=self.gate.hasher.hash(normalised),
            days=settings.recovery_delay_days,
            origin=settings.origin,
            where=client.where(),
            now=now,
        )
        if until is None:
            session.rollback()
            raise Gone("This recovery link was already used.", code="recovery_link_used")
        session.commit()
        return RecoveryOutcome(status="delayed", delay_until=until)

    def _check_factor(
        self,
        session: Session,
        row: AccountRecovery,
        login: Login,
        attempt: Attempt,
        *,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        client: Client,
        now: datetime,
    ) -> None:
        """Each try is reserved before it is checked, so concurrent guesses on one link
        cannot exceed MAX_FACTOR_TRIES; a wrong one counts for the account (S2)."""
        gate = self.gate
        owner = login.owner
        reserved = session.execute(
            update(AccountRecovery)
            .where(
                AccountRecovery.id == row.id,
                AccountRecovery.state == RecoveryState.SENT,
                AccountRecovery.attempts < MAX_FACTOR_TRIES,
            )
            .values(attempts=AccountRecovery.attempts + 1)
        )
        session.commit()
        if getattr(reserved, "rowcount", 0) != 1:
            raise Gone("This recovery link was already used.", code="recovery_link_used")
        accepted = gate.verify_factor(
            session,
            login,
            code=code,
            recovery_code=recovery_code,
            webauthn=webauthn,
            webauthn_challenge=row.webauthn_challenge,
            now=now,
        )
        if accepted is not None:
            return
        record_by(
            session, owner, AuditTag.SECOND_FACTOR_FAILURE, now=now, subject=f"recovery:{row.id}"
        )
        if gate._first_failure_notice(session, owner, now):  # S4
            enqueue(
                session,
                gate.keys,
                kind=NoticeKind.SECOND_FACTOR_FAILED,
                owner=owner,
                params={"at": now.isoformat(), **client.where()},
                now=now,
            )
        if gate.throttle.record_failure(attempt, now.timestamp()):
            gate._defended_alert(session, now=now)
        # The link's tries are spent: it is used up.
        session.execute(
            update(AccountRecovery)
            .where(
                AccountRecovery.id == row.id,
                AccountRecovery.state == RecoveryState.SENT,
                AccountRecovery.attempts >= MAX_FACTOR_TRIES,
            )
            .values(state=RecoveryState.USED, used_at=now)
        )
        session.commit()
        wrong = InvalidCredentials("That code is not right.", code="invalid_second_factor")
        wrong.notices_queued = True
        raise wrong

    # -- the delayed path, for the owner and the worker ------------------------------------

    def cancel(self, session: Session, *, token: str, now: datetime) -> None:
        recovery_wait.cancel_by_token(session, self.gate.keys, token=token, now=now)

    def pending(self, session: Session, *, owner: Owner) -> recovery_wait.PendingReset | None:
        return recovery_wait.pending(session, owner)

    def cancel_pending(self, session: Session, *, owner: Owner, now: datetime) -> int:
        return recovery_wait.cancel_pending(session, self.gate.keys, owner=owner, now=now)

    def complete_due(self, *, now: datetime) -> int:
        return recovery_wait.complete_due(self.open_session, self.gate.keys, now=now)
