"""Signing in so that credential stuffing fails (R4-R7, S1-S5, C7).

The order of checks on `POST /api/v1/auth/token`:

1. **Throttle before any hash** (S2, S4): the source address and its /24 (/64) are slowed
   down progressively after failures; the check reserves the attempt's slot atomically,
   so concurrent connections get no extra guesses. The account is never delayed or locked
   (an attacker must never lock a real user out) but after a few failures it needs a
   second factor or an emailed link, after `account_link_after` its codes are checked
   only behind the emailed link, and after 100 its password is not checked at all, from
   any device (NIST SP 800-63B §5.2.2). A known device (a cookie from an earlier sign-in)
   skips source delays (OWASP, device cookies), never the account's limits.
1b. **Admission** (R6, `admission.py`): in defended mode an unknown device's hash spends
   from a global budget of hashes per second, and beyond it gets a cheap 429
   (`sign_in_busy`) before the account is looked up; every hash holds one of the
   process's argon2 slots, some of which only known devices and second steps may use.
2. **The password**, argon2id, with a dummy hash for unknown accounts: the same answer and
   the same work whether or not the account exists.
3. **Breached-password check** by k-anonymity (S5): a breached password admits the person
   only to a forced change (R7), after a second factor or an emailed link.
4. **Second factor**: always when one is enrolled; TOTP (replays refused), WebAuthn or a
   recovery code. An account without one gets an emailed one-time link when it signs in
   from a device Tutela has not seen (from the first attempt, in any mode), and from a
   known device when the sign-in is risky (failures on the account, or defended mode and
   a risky source).
5. **Stuffing detector**: failure ratio, accounts per source and breached hits switch the
   service into defended mode and raise a security alert.

Every step appends an audit event; notices go through the outbox.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import (
    InvalidCredentials,
    NotAuthenticated,
    ServiceUnavailable,
)
from tutela.identity import factors, password_rules
from tutela.identity.admission import Caller
from tutela.identity.in_session import InSession
from tutela.identity.logins import (
    Client,
    Guess,
    Login,
    SignInOutcome,
)
from tutela.identity.models import (
    KnownDevice,
    PasswordCredential,
    SessionKind,
)
from tutela.identity.passkeys import PasskeySignIn
from tutela.identity.signup import SignUp
from tutela.identity.staff import ENROLMENT_WINDOW
from tutela.identity.staff_door import refuse_employee
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")

__all__ = ["Client", "Gate", "Login", "SignInOutcome"]


class Gate(InSession, SignUp, PasskeySignIn):
    """The sign-in use cases: the password step here, the rest (second step, step-up,
    sign-up, usernameless passkeys) from the steps it joins."""

    # -- the password step -------------------------------------------------------------

    def sign_in(
        self,
        session: Session,
        *,
        email: str,
        password: str,
        kind: SessionKind,
        client: Client,
        now: datetime,
        staff: bool = False,
    ) -> SignInOutcome:
        """Check throttles, then the password, then decide what must follow.

        The throttle is asked first, from a keyed hash of the email alone: an attempt it
        refuses costs no database query (unless it carries a device cookie) and no hash.
        """
        known = self._device_for_email(session, email, client.device_token, staff=staff, now=now)
        attempt = Attempt(
            account=self._account_key(email, staff=staff, now=now),
            source=client.address,
            known_device=known is not None,
        )
        guess = self._begin(attempt, now)
        try:
            return self._password_step(
                session,
                guess,
                email=email,
                password=password,
                kind=kind,
                client=client,
                known=known,
                staff=staff,
                now=now,
            )
        finally:
            guess.release()

    def _password_step(
        self,
        session: Session,
        guess: Guess,
        *,
        email: str,
        password: str,
        kind: SessionKind,
        client: Client,
        known: KnownDevice | None,
        staff: bool,
        now: datetime,
    ) -> SignInOutcome:
        verdict = guess.verdict
        if known is None and not verdict.password_locked:
            # Before the account is looked up: the refusal costs one Redis call and is
            # the same whether or not the account exists.
            self._spend_new_device_hash(defended=verdict.defended, now=now)
        login = self._login(session, email, staff=staff, now=now)
        # S2: at the account's limit no password is checked from any device. The same
        # answer whether or not the account exists; a real customer gets a link, which
        # stands in for the password only: a second factor, if any, still follows.
        # Employees get no link: from their own device the password is still checked, and
        # then only a WebAuthn assertion completes the sign-in (see `complete_factor`).
        if verdict.password_locked and (login is None or login.staff is None or known is None):
            refused = NotAuthenticated(
                "For this account's safety, use the sign-in link we emailed to its address.",
                code="sign_in_link_required",
            )
            if login is not None and login.staff is None:
                self._send_link(session, login, kind=kind, breached=False, now=now, client=client)
                session.commit()
                refused.notices_queued = True
            raise refused
        if not staff:
            # An employee's email at the customers' door: see identity/staff_door.py.
            refuse_employee(
                self,
                session,
                email=email,
                password=password,
                source=client.address,
                customer=login is not None,
                now=now,
            )
        password = password_rules.normalise(password)
        with self.admission.slot(Caller.NEW_DEVICE if known is None else Caller.KNOWN_DEVICE):
            ok = self.hasher.verify(login.password_hash if login else None, password)
        breached = self._breached(session, password, staff=staff)
        if not ok or login is None:
            if known is not None:
                self._device_failure(session, known)
            wrong = InvalidCredentials("The email or password is not right.")
            wrong.notices_queued = self._failure(
                session, guess, login=login, breached=breached, now=now
            )
            raise wrong
        if guess.succeed(breached=breached):
            self._defended_alert(session, now=now)
        if login.staff is not None and self._staff_refused(session, login, now):
            self._failure(session, guess, login=login, breached=False, now=now, count=False)
            raise InvalidCredentials("The email or password is not right.")
        self._rehash(session, login, password, now)
        if breached:
            self._mark_breached(session, login, now)
        outcome = self._after_password(
            session,
            login,
            attempt=guess.attempt,
            known=known,
            kind=kind,
            client=client,
            breached=breached,
            risky=verdict.step_up or (verdict.defended and (verdict.risky or known is None)),
            codes_locked=verdict.codes_locked,
            now=now,
        )
        session.commit()
        return outcome

    def _breached(self, session: Session, password: str, *, staff: bool) -> bool:
        try:
            return self.breaches.within(session).count(password) > 0
        except Exception as exc:  # the store is down: customers go on, employees do not
            log.warning("breached-password check failed: %s", type(exc).__name__)
            if staff:
                raise ServiceUnavailable(
                    "Sign-in is unavailable for a moment.", code="breach_check_unavailable"
                ) from None
            return False

    def _staff_refused(self, session: Session, login: Login, now: datetime) -> bool:
        member = login.staff
        assert member is not None
        if member.disabled_at is not None:
            return True
        # An initial password whose holder never enrolled a factor expires (R4).
        return (
            not factors.has_second_factor(session, login.owner)
            and now - member.password_updated_at > ENROLMENT_WINDOW
        )

    def _failure(
        self,
        session: Session,
        guess: Guess,
        *,
        login: Login | None,
        breached: bool,
        now: datetime,
        count: bool = True,
    ) -> bool:
        # A stuffing list is full of addresses with no account here: a failure for an
        # unknown email counts, like a breached password, as a hit on a breached list.
        entered = count and guess.fail(breached=breached or login is None)
        record(
            session,
            tag=AuditTag.ACCOUNT_LOGIN_FAILURE,
            actor=login.owner.ref if login else "anonymous",
            now=now,
            household_id=login.owner.household_id if login else None,
        )
        if entered:
            self._defended_alert(session, now=now)
        session.commit()
        return bool(entered)

    def _rehash(self, session: Session, login: Login, password: str, now: datetime) -> None:
        if not self.hasher.needs_rehash(login.password_hash):
            return
        new_hash = self.hasher.hash(password)
        if login.staff is not None:
            login.staff.password_hash = new_hash
        else:
            credential = session.get(PasswordCredential, (login.owner.household_id, login.owner.id))
            if credential is not None:
                credential.hash = new_hash

    def _mark_breached(self, session: Session, login: Login, now: datetime) -> None:
        if login.staff is not None:
            login.staff.password_must_change = True
        else:
            credential = session.get(PasswordCredential, (login.owner.household_id, login.owner.id))
            if credential is not None:
                credential.must_change = True
        record(
            session,
            tag=AuditTag.PASSWORD_BREACHED,
            actor="system",
            now=now,
            household_id=login.owner.household_id,
            subject=login.owner.ref,
        )
        enqueue(
            session,
            self.keys,
            kind=NoticeKind.PASSWORD_BREACHED,
            owner=login.owner,
            params={"at": now.isoformat()},
            now=now,
        )

    def _after_password(
        self,
        session: Session,
        login: Login,
        *,
        attempt: Attempt,
        known: KnownDevice | None,
        kind: SessionKind,
        client: Client,
        breached: bool,
        risky: bool,
        codes_locked: bool,
        now: datetime,
    ) -> SignInOutcome:
        owner = login.owner
        enrolled = factors.list_factors(session, owner)
        if enrolled and codes_locked and login.staff is None:
            # S2, before the limit: after many failures on the account, from any device,
            # a code is checked only on a sign-in that came through the mailbox.
            self._send_link(session, login, kind=kind, breached=breached, now=now, client=client)
            return SignInOutcome(status="link_sent", notices=True)
        if enrolled:
            return self._factor_challenge(session, login, kind=kind, breached=breached, now=now)
        stage = self.stage_for(session, login, breached=breached)
        # No session from a device Tutela has not seen on a password alone (R6), from the
        # first attempt: a stuffed password is right the first time, so no counter or
        # detector could have warned. The mailbox decides, as it does on a risky or
        # breached sign-in. A new account's first sign-in is always such a case, so the
        # mailbox is proven before its first session.
        new_device = known is None
        if login.staff is None and (risky or breached or login.must_change or new_device):
            self._send_link(session, login, kind=kind, breached=breached, now=now, client=client)
            return SignInOutcome(status="link_sent", notices=True)
        return self._complete(
            session,
            login,
            attempt=attempt,
            known=known,
            kind=kind,
            client=client,
            stage=stage,
            stepped_up=False,
            now=now,
        )
