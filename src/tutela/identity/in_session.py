"""Checks made inside a session: step-up before dangerous actions (C7), password change
(S1), and a session's stage after a factor was added (R5).

Their password hashes are second steps already in progress: they spend nothing from the
defended-mode budget and may use the argon2 slots reserved from unknown devices (R6).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag
from tutela.core.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    NotAuthenticated,
    StepUpRequired,
)
from tutela.identity import factors, password_rules
from tutela.identity import service as sessions
from tutela.identity.admission import Caller
from tutela.identity.logins import (
    MAX_STEP_UP_FAILURES,
    Client,
    Guess,
    Login,
    row_owned,
)
from tutela.identity.models import (
    ChallengePurpose,
    KnownDevice,
    PasswordCredential,
    SessionKind,
    SessionStage,
    SignInSession,
)
from tutela.identity.owners import record_by
from tutela.identity.second_step import SecondStep
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")


class InSession(SecondStep):
    """Step-up, password change and stages, for a signed-in principal."""

    def _guarded_attempt(
        self, session: Session, login: Login, client: Client, now: datetime
    ) -> Guess:
        """The throttle's slot for a check made inside a session (step-up, password change):
        refused while the source is slowed down or the account is at its limit (S2). The
        caller releases it on the way out."""
        attempt = Attempt(
            account=self._account_for_owner(session, login, now), source=client.address
        )
        guess = self._begin(attempt, now, "failed attempts")
        if guess.verdict.password_locked:
            guess.release()
            raise Forbidden(
                "Too many failed attempts on this account; sign in again.",
                code="account_limit_reached",
            )
        return guess

    def step_up(
        self,
        session: Session,
        *,
        principal: sessions.AnyPrincipal,
        password: str | None,
        code: str | None,
        recovery_code: str | None,
        webauthn: dict[str, Any] | str | None,
        webauthn_token: str | None,
        client: Client,
        now: datetime,
    ) -> None:
        """A fresh second factor (or the password, for an account without one) (C7).

        Throttled like a sign-in; after MAX_STEP_UP_FAILURES wrong answers in a row the
        session itself ends, so a stolen session cannot guess its way past step-up.
        """
        login = self.login_of(session, principal.owner)
        owner = login.owner
        guess = self._guarded_attempt(session, login, client, now)
        try:
            challenge_bytes: bytes | None = None
            if webauthn_token is not None:
                row = self._challenge(session, webauthn_token, ChallengePurpose.STEP_UP, now)
                if not row_owned(row, owner):
                    raise NotAuthenticated("Sign in first.")
                self._consume(session, row, now)
                challenge_bytes = row.webauthn_challenge
            ok: bool
            if factors.has_second_factor(session, owner):
                ok = (
                    self.verify_factor(
                        session,
                        login,
                        code=code,
                        recovery_code=recovery_code,
                        webauthn=webauthn,
                        webauthn_challenge=challenge_bytes,
                        now=now,
                    )
                    is not None
                )
            elif password is None:
                ok = False
            else:
                with self.admission.slot(Caller.SECOND_STEP):
                    ok = self.hasher.verify(login.password_hash, password_rules.normalise(password))
            if not ok:
                guess.fail()
                record_by(session, owner, AuditTag.SECOND_FACTOR_FAILURE, now=now)
                session.execute(
                    update(SignInSession)
                    .where(SignInSession.id == principal.session_id)
                    .values(failed_step_ups=SignInSession.failed_step_ups + 1)
                )
                ended = session.execute(
                    update(SignInSession)
                    .where(
                        SignInSession.id == principal.session_id,
                        SignInSession.failed_step_ups >= MAX_STEP_UP_FAILURES,
                        SignInSession.revoked_at.is_(None),
                    )
                    .values(revoked_at=now)
                )
                session.commit()
                if getattr(ended, "rowcount", 0):
                    raise NotAuthenticated(
                        "Too many failed confirmations: this session has ended.",
                        code="session_ended",
                    )
                raise InvalidCredentials("That did not confirm it is you.", code="step_up_failed")
            session.execute(
                update(SignInSession)
                .where(SignInSession.id == principal.session_id)
                .values(failed_step_ups=0)
            )
            sessions.mark_stepped_up(session, session_id=principal.session_id, now=now)
            record_by(
                session, owner, AuditTag.STEP_UP, now=now, subject=f"session:{principal.session_id}"
            )
            session.commit()

        finally:
            guess.release()

    def step_up_options(
        self, session: Session, *, principal: sessions.AnyPrincipal, now: datetime
    ) -> tuple[str, str] | None:
        """A WebAuthn challenge for step-up, when the owner has a WebAuthn credential."""
        owner = principal.owner
        if not factors.has_webauthn(session, owner):
            return None
        challenge_bytes, options = factors.authentication_options(
            session, owner, rp_id=self.settings.rp_id
        )
        token = self.add_challenge(
            session,
            owner,
            ChallengePurpose.STEP_UP,
            kind=SessionKind.API,
            breached=False,
            minutes=self.settings.challenge_ttl_minutes,
            now=now,
            webauthn_challenge=challenge_bytes,
        )
        session.commit()
        return token, options

    def require_step_up(
        self, session: Session, principal: sessions.AnyPrincipal, *, now: datetime
    ) -> None:
        """Dangerous actions need a second factor presented in the last few minutes (C7).

        A session that may only enrol a first factor or change a breached password is let
        through for exactly that.
        """
        if principal.stage != SessionStage.FULL:
            return
        fresh = principal.stepped_up_at is not None and now - principal.stepped_up_at <= timedelta(
            minutes=self.settings.step_up_minutes
        )
        if not fresh:
            raise StepUpRequired(
                "Confirm it is you with your second factor (or password) first.",
                step_up_url="/api/v1/auth/step-up",
            )

    def change_password(
        self,
        session: Session,
        *,
        principal: sessions.AnyPrincipal,
        current_password: str,
        new_password: str,
        client: Client,
        now: datetime,
    ) -> sessions.IssuedSession:
        """Set a new password (NIST rules, S1), end every session, open a fresh one.

        Needs the current password, and a fresh step-up when the session is a full one.
        """
        if principal.stage == SessionStage.ENROL:
            raise Forbidden("Add a second factor first.", code="mfa_enrolment_required")
        self.require_step_up(session, principal, now=now)
        login = self.login_of(session, principal.owner)
        owner = login.owner
        guess = self._guarded_attempt(session, login, client, now)
        try:
            with self.admission.slot(Caller.SECOND_STEP):
                right = self.hasher.verify(
                    login.password_hash, password_rules.normalise(current_password)
                )
            if not right:
                guess.fail()
                record_by(session, owner, AuditTag.ACCOUNT_LOGIN_FAILURE, now=now)
                session.commit()
                raise InvalidCredentials("The current password is not right.")
            email = self._email(session, owner, now)
            normalised = password_rules.check_new_password(
                new_password, email=email, breaches=self.breaches.within(session)
            )
            with self.admission.slot(Caller.SECOND_STEP):
                if self.hasher.verify(login.password_hash, normalised):
                    raise InvalidInput(
                        "Choose a password you have not used here.", code="password_reused"
                    )
                new_hash = self.hasher.hash(normalised)
            if login.staff is not None:
                login.staff.password_hash = new_hash
                login.staff.password_updated_at = now
                login.staff.password_must_change = False
            else:
                credential = session.get(PasswordCredential, (owner.household_id, owner.id))
                assert credential is not None
                credential.hash = new_hash
                credential.updated_at = now
                credential.must_change = False
            sessions.end_all(session, owner=owner, now=now)
            # Every device must sign in again with the new password, and no pending sign-in
            # made with the old one can complete.
            session.execute(delete(KnownDevice).where(owner.where(KnownDevice)))
            self.close_challenges(session, owner, now)
            record_by(session, owner, AuditTag.PASSWORD_CHANGED, now=now)
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.PASSWORD_CHANGED,
                owner=owner,
                params={"at": now.isoformat(), "address": client.address},
                now=now,
            )
            fresh_login = Login(
                owner=owner, password_hash=new_hash, must_change=False, staff=login.staff
            )
            stage = self.stage_for(session, fresh_login, breached=False)
            row = session.get(SignInSession, principal.session_id)
            kind = SessionKind(row.kind) if row is not None else SessionKind.API
            issued = sessions.open_session(
                session,
                self.keys,
                owner=owner,
                kind=kind,
                stage=stage,
                ttl=self._ttl(kind),
                user_agent=client.user_agent,
                address=client.address,
                now=now,
                stepped_up=True,
            )
            session.commit()
            return issued
        finally:
            guess.release()

    def refresh_stage(
        self, session: Session, principal: sessions.AnyPrincipal, *, now: datetime
    ) -> SessionStage:
        """After a factor was added: the session may move on from enrolment, and every
        other session (opened before any factor existed) ends (R5)."""
        login = self.login_of(session, principal.owner)
        stage = self.stage_for(session, login, breached=False)
        sessions.set_stage(session, session_id=principal.session_id, stage=stage)
        if stage != SessionStage.ENROL:
            sessions.end_all(session, owner=principal.owner, now=now, keep=principal.session_id)
        return stage

    def current_stage(self, session: Session, principal: sessions.AnyPrincipal) -> SessionStage:
        """What the session could do if it were opened now (its stored stage may be stale)."""
        row = session.get(SignInSession, principal.session_id)
        if row is not None and row.stage == SessionStage.CHANGE_PASSWORD:
            return SessionStage.CHANGE_PASSWORD
        return self.stage_for(session, self.login_of(session, principal.owner), breached=False)
