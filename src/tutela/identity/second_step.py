"""The second step of a sign-in: a TOTP code, a recovery code, a WebAuthn assertion, or
the emailed link (R4-R6, S2, S4)."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag
from tutela.core.errors import (
    InvalidCredentials,
    InvalidInput,
    NotAuthenticated,
)
from tutela.identity import factors
from tutela.identity import service as sessions
from tutela.identity.logins import (
    LINK_PREFIX,
    MAX_FACTOR_TRIES,
    Client,
    GateCore,
    Guess,
    Login,
    SignInOutcome,
)
from tutela.identity.models import (
    ChallengePurpose,
    FactorKind,
    KnownDevice,
    SessionKind,
    SignInChallenge,
)
from tutela.identity.owners import record_by
from tutela.identity.staff import needs_webauthn
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")


class SecondStep(GateCore):
    """The second step: a factor or the emailed link."""

    def verify_factor(
        self,
        session: Session,
        login: Login,
        *,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        webauthn_challenge: bytes | None,
        now: datetime,
    ) -> str | None:
        """The kind of factor that was presented and accepted, or None."""
        owner = login.owner
        webauthn_only = login.staff is not None and needs_webauthn(login.roles)
        if webauthn is not None and webauthn_challenge is not None:
            try:
                factors.verify_assertion(
                    session,
                    owner,
                    challenge=webauthn_challenge,
                    credential=webauthn,
                    rp_id=self.settings.rp_id,
                    origin=self.settings.origin,
                    now=now,
                )
            except InvalidInput:
                return None
            return FactorKind.WEBAUTHN
        if webauthn_only:
            return None
        if code is not None:  # one kind of code per attempt, never both
            found = factors.verify_totp(session, self.keys, owner, code, now=now)
            return FactorKind.TOTP if found is not None else None
        if recovery_code is not None and factors.use_recovery_code(
            session, self.keys, owner, recovery_code, now=now
        ):
            record_by(session, owner, AuditTag.RECOVERY_CODE_USED, now=now)
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.RECOVERY_CODE_USED,
                owner=owner,
                params={
                    "at": now.isoformat(),
                    "count": str(factors.recovery_codes_left(session, owner)),
                },
                now=now,
            )
            return "recovery_code"
        return None

    def complete_factor(
        self,
        session: Session,
        *,
        challenge: str,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        client: Client,
        now: datetime,
    ) -> SignInOutcome:
        """The second step: a TOTP code, a recovery code or a WebAuthn assertion.

        Every wrong code counts as a failure of the account and of the source (S2), from a
        known device too, and each try is reserved atomically before it is checked, so
        concurrent guesses on one challenge cannot exceed MAX_FACTOR_TRIES.
        """
        row = self._challenge(session, challenge, ChallengePurpose.SECOND_FACTOR, now)
        login = self._login_of_row(session, row)
        known = self._known_device(session, login, client.device_token, now)
        attempt = Attempt(
            account=self._account_for_owner(session, login, now),
            source=client.address,
            known_device=known is not None,
        )
        guess = self._begin(attempt, now, "failed attempts")
        try:
            return self._factor_step(
                session,
                guess,
                row=row,
                login=login,
                known=known,
                code=code,
                recovery_code=recovery_code,
                webauthn=webauthn,
                client=client,
                now=now,
            )
        finally:
            guess.release()

    def _factor_step(
        self,
        session: Session,
        guess: Guess,
        *,
        row: SignInChallenge,
        login: Login,
        known: KnownDevice | None,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        client: Client,
        now: datetime,
    ) -> SignInOutcome:
        owner = login.owner
        verdict = guess.verdict
        # S2, from any device: at the account's limit, and for customers already after
        # `account_link_after` failures, a code is checked only on a sign-in that came
        # through the emailed link. A WebAuthn assertion, which cannot be guessed, still is.
        codes_locked = verdict.password_locked or (verdict.codes_locked and login.staff is None)
        if codes_locked and not row.via_link and webauthn is None:
            self.close_challenges(session, owner, now, purposes=(ChallengePurpose.SECOND_FACTOR,))
            if login.staff is None:
                kind = SessionKind(row.session_kind)
                self._send_link(
                    session, login, kind=kind, breached=row.breached, now=now, client=client
                )
                session.commit()
                refused = NotAuthenticated(
                    "For this account's safety, use the sign-in link we emailed to its address.",
                    code="sign_in_link_required",
                )
                refused.notices_queued = True
                raise refused
            session.commit()
            raise NotAuthenticated(
                "This sign-in has expired; start again.", code="challenge_expired"
            )
        reserved = session.execute(
            update(SignInChallenge)
            .where(
                SignInChallenge.id == row.id,
                SignInChallenge.consumed_at.is_(None),
                SignInChallenge.attempts < MAX_FACTOR_TRIES,
            )
            .values(attempts=SignInChallenge.attempts + 1)
        )
        session.commit()
        if getattr(reserved, "rowcount", 0) != 1:
            raise NotAuthenticated(
                "This sign-in has expired; start again.", code="challenge_expired"
            )
        accepted = self.verify_factor(
            session,
            login,
            code=code,
            recovery_code=recovery_code,
            webauthn=webauthn,
            webauthn_challenge=row.webauthn_challenge,
            now=now,
        )
        if accepted is None:
            record_by(session, owner, AuditTag.SECOND_FACTOR_FAILURE, now=now)
            queued = self._first_failure_notice(session, owner, now)
            if queued:  # S4, at most one such notice per 15 minutes
                enqueue(
                    session,
                    self.keys,
                    kind=NoticeKind.SECOND_FACTOR_FAILED,
                    owner=owner,
                    params={"at": now.isoformat(), **client.where()},
                    now=now,
                )
            if known is not None:
                self._device_failure(session, known)
            if guess.fail():
                self._defended_alert(session, now=now)
                queued = True
            session.commit()
            wrong = InvalidCredentials("That code is not right.", code="invalid_second_factor")
            wrong.notices_queued = queued
            raise wrong
        self._consume(session, row, now)
        outcome = self._session_of(
            session,
            row,
            login,
            attempt=guess.attempt,
            known=known,
            client=client,
            stepped_up=True,
            now=now,
        )
        outcome.notices = True
        return outcome

    def _session_of(
        self,
        session: Session,
        row: SignInChallenge,
        login: Login,
        *,
        attempt: Attempt,
        known: KnownDevice | None,
        client: Client,
        stepped_up: bool,
        now: datetime,
    ) -> SignInOutcome:
        """The session a completed (already consumed) challenge signs in to, committed: of
        the challenge's kind, at the stage its password earned."""
        stage = self.stage_for(session, login, breached=row.breached)
        outcome = self._complete(
            session,
            login,
            attempt=attempt,
            known=known,
            kind=SessionKind(row.session_kind),
            client=client,
            stage=stage,
            stepped_up=stepped_up,
            now=now,
        )
        session.commit()
        return outcome

    def complete_link(
        self, session: Session, *, token: str, client: Client, now: datetime
    ) -> SignInOutcome:
        """The emailed link: it stands in for the password (or proves the mailbox on a
        risky sign-in). An owner with a second factor must still present it.

        A link that is wrong, used or expired is a failure of the source and, when it names
        an account, of that account (S2, S4).
        """
        guess = self._begin(self._link_attempt(session, token, client, now), now, "failed attempts")
        try:
            try:
                row = self._challenge(session, token, ChallengePurpose.EMAIL_LINK, now)
                login = self._login_of_row(session, row)
                if login.staff is not None:
                    raise NotAuthenticated(
                        "This sign-in has expired; start again.", code="challenge_expired"
                    )
            except NotAuthenticated:
                if guess.fail():
                    self._defended_alert(session, now=now)
                    session.commit()
                raise
            return self._link_step(session, row=row, login=login, client=client, now=now)
        finally:
            guess.release()

    def _link_attempt(self, session: Session, token: str, client: Client, now: datetime) -> Attempt:
        """The throttle's view of a link: its account if the token names one."""
        row = None
        if token.startswith(LINK_PREFIX) and len(token) <= 100:
            row = session.scalar(
                select(SignInChallenge).where(
                    SignInChallenge.token_hash == sessions.token_hash(token)
                )
            )
        account = "x:link"  # a token that names nobody counts against its source only
        if row is not None and row.purpose == ChallengePurpose.EMAIL_LINK:
            with contextlib.suppress(NotAuthenticated):
                account = self._account_for_owner(session, self._login_of_row(session, row), now)
        return Attempt(account=account, source=client.address)

    def _link_step(
        self,
        session: Session,
        *,
        row: SignInChallenge,
        login: Login,
        client: Client,
        now: datetime,
    ) -> SignInOutcome:
        self._consume(session, row, now)
        if factors.has_second_factor(session, login.owner):
            outcome = self._factor_challenge(
                session,
                login,
                kind=SessionKind(row.session_kind),
                breached=row.breached,
                now=now,
                via_link=True,
            )
            session.commit()
            return outcome
        attempt = Attempt(
            account=self._account_for_owner(session, login, now), source=client.address
        )
        known = self._known_device(session, login, client.device_token, now)
        return self._session_of(
            session,
            row,
            login,
            attempt=attempt,
            known=known,
            client=client,
            stepped_up=False,
            now=now,
        )
