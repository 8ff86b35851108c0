"""Signing in so that credential stuffing fails (R4-R7, S1-S5, C7).

The order of checks on `POST /api/v1/auth/token`:

1. **Throttle before any hash** (S2, S4): the source address and its /24 (/64) are slowed
   down progressively after failures; the account is never delayed or locked (an
   attacker must never lock a real user out) but after a few failures it needs a second
   factor or an emailed link, and after 100 its password is not even checked from an
   unknown device (NIST SP 800-63B §5.2.2). A known device (a cookie from an earlier
   sign-in) skips source delays (OWASP, device cookies).
1b. **Admission** (R6, `admission.py`): in defended mode an unknown device's hash spends
   from a global budget of hashes per second, and beyond it gets a cheap 429
   (`sign_in_busy`) before the account is looked up; every hash holds one of the
   process's argon2 slots, some of which only known devices and second steps may use.
2. **The password**, argon2id, with a dummy hash for unknown accounts: the same answer and
   the same work whether or not the account exists.
3. **Breached-password check** by k-anonymity (S5): a breached password admits the person
   only to a forced change (R7), after a second factor or an emailed link.
4. **Second factor**: always when one is enrolled; TOTP (replays refused), WebAuthn or a
   recovery code. An account without one gets an emailed one-time link when its sign-in
   is risky (failures on the account, or defended mode and a risky source or new device).
5. **Stuffing detector**: failure ratio, accounts per source and breached hits switch the
   service into defended mode and raise a security alert.

Every step appends an audit event; notices go through the outbox.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import (
    InvalidCredentials,
    NotAuthenticated,
    ServiceUnavailable,
    TooManyAttempts,
)
from tutela.identity import factors, password_rules
from tutela.identity.admission import Caller
from tutela.identity.in_session import InSession
from tutela.identity.logins import (
    KNOWN_DEVICE_MAX_FAILURES,
    Client,
    Login,
    SignInOutcome,
)
from tutela.identity.models import (
    KnownDevice,
    PasswordCredential,
    SessionKind,
    SessionStage,
)
from tutela.identity.signup import SignUp
from tutela.identity.staff import ENROLMENT_WINDOW
from tutela.identity.staff_door import refuse_employee
from tutela.identity.throttle import Attempt
from tutela.notices.service import NoticeKind, enqueue

log = logging.getLogger("tutela.identity")

__all__ = ["Client", "Gate", "Login", "SignInOutcome"]


class Gate(InSession, SignUp):
    """The sign-in use cases: the password step here, the rest from the steps it joins."""

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
        ts = now.timestamp()
        verdict = self.throttle.check(attempt, ts)
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many failed sign-ins from your network. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        if known is None and not verdict.password_locked:
            # Before the account is looked up: the refusal costs one Redis call and is
            # the same whether or not the account exists.
            self._spend_new_device_hash(defended=verdict.defended, now=now)
        login = self._login(session, email, staff=staff, now=now)
        if verdict.password_locked:
            # S2: no more password guesses for this account from unknown devices. The same
            # answer whether or not the account exists; a real customer gets a link, which
            # stands in for the password only: a second factor, if any, still follows.
            # Employees get no link: they sign in from a known device or are reset.
            refused = NotAuthenticated(
                "For this account's safety, use the sign-in link we emailed to its address.",
                code="sign_in_link_required",
            )
            if login is not None and login.staff is None:
                self._send_link(session, login, kind=kind, breached=False, now=now, client=client)
                session.commit()
                refused.notices_queued = True
            raise refused
        if login is None and not staff:
            # An employee's email at the customers' door: see identity/staff_door.py.
            refuse_employee(
                self, session, email=email, password=password, source=client.address, now=now
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
                session, attempt, login=login, breached=breached, now=now
            )
            raise wrong
        if self.throttle.record_success(attempt, ts, breached=breached):
            self._defended_alert(session, now=now)
        if login.staff is not None and self._staff_refused(session, login, now):
            self._failure(session, attempt, login=login, breached=False, now=now, count=False)
            raise InvalidCredentials("The email or password is not right.")
        self._rehash(session, login, password, now)
        if breached:
            self._mark_breached(session, login, now)
        outcome = self._after_password(
            session,
            login,
            attempt=attempt,
            known=known,
            kind=kind,
            client=client,
            breached=breached,
            risky=verdict.step_up or (verdict.defended and (verdict.risky or known is None)),
            now=now,
        )
        session.commit()
        return outcome

    def _device_failure(self, session: Session, known: KnownDevice) -> None:
        """A known device that keeps sending wrong passwords stops being trusted (S2)."""
        session.execute(
            update(KnownDevice)
            .where(KnownDevice.id == known.id)
            .values(failures=KnownDevice.failures + 1)
        )
        session.execute(
            delete(KnownDevice).where(
                KnownDevice.id == known.id, KnownDevice.failures >= KNOWN_DEVICE_MAX_FAILURES
            )
        )

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
        attempt: Attempt,
        *,
        login: Login | None,
        breached: bool,
        now: datetime,
        count: bool = True,
    ) -> bool:
        # A stuffing list is full of addresses with no account here: a failure for an
        # unknown email counts, like a breached password, as a hit on a breached list.
        entered = count and self.throttle.record_failure(
            attempt, now.timestamp(), breached=breached or login is None
        )
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
        now: datetime,
    ) -> SignInOutcome:
        owner = login.owner
        enrolled = factors.list_factors(session, owner)
        if enrolled:
            return self._factor_challenge(session, login, kind=kind, breached=breached, now=now)
        stage = self.stage_for(session, login, breached=breached)
        # The password alone must not let someone enrol the first factor from a new
        # device, nor open a session on a risky or breached sign-in: the mailbox decides.
        first_enrolment = stage == SessionStage.ENROL and known is None
        if login.staff is None and (risky or breached or login.must_change or first_enrolment):
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
