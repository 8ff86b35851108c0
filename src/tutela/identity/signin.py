"""Signing in so that credential stuffing fails (R4-R7, S1-S5, C7).

The order of checks on `POST /api/v1/auth/token`:

1. **Throttle before any hash** (S2, S4): the source address and its /24 (/64) are slowed
   down progressively after failures; the account is never delayed or locked (an
   attacker must never lock a real user out) but after a few failures it needs a second
   factor or an emailed link, and after 100 its password is not even checked from an
   unknown device (NIST SP 800-63B §5.2.2). A known device (a cookie from an earlier
   sign-in) skips source delays (OWASP, device cookies).
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

import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    NotAuthenticated,
    ServiceUnavailable,
    StepUpRequired,
    TooManyAttempts,
)
from tutela.core.ids import uuid7
from tutela.households import service as households
from tutela.households.models import Account, Device, DeviceKind, Profile, ProfileState
from tutela.identity import factors, password_rules
from tutela.identity import service as sessions
from tutela.identity.breached import BreachChecker
from tutela.identity.models import (
    ChallengePurpose,
    FactorKind,
    KnownDevice,
    PasswordCredential,
    SessionKind,
    SessionStage,
    SignInChallenge,
    SignInSession,
    StaffMember,
)
from tutela.identity.owners import Owner
from tutela.identity.passwords import PasswordHasher
from tutela.identity.staff import ENROLMENT_WINDOW, find_staff, needs_webauthn, staff_index
from tutela.identity.throttle import Attempt, Throttle
from tutela.notices.service import NoticeKind, enqueue
from tutela.settings import Settings
from tutela.vault.keystore import KeyStore

log = logging.getLogger("tutela.identity")

CHALLENGE_PREFIX = "tsc_"
DEVICE_PREFIX = "tsd_"
LINK_PREFIX = "tsl_"
MAX_FACTOR_TRIES = 5
MAX_STEP_UP_FAILURES = 5
KNOWN_DEVICE_MAX_FAILURES = 10
KNOWN_DEVICE_TTL = timedelta(days=180)


@dataclass(frozen=True)
class Client:
    """Where an attempt comes from. `device_token` is the known-device cookie, if any."""

    address: str
    user_agent: str = ""
    device_token: str | None = None


@dataclass
class SignInOutcome:
    """Either a session (with its stage), or what must come next."""

    status: str  # "signed_in" | "second_factor_required" | "link_sent"
    issued: sessions.IssuedSession | None = None
    challenge: str | None = None
    factors: list[str] = field(default_factory=list)
    webauthn_options: str | None = None
    device_token: str | None = None
    notices: bool = False  # outbox rows were added: deliver after commit


@dataclass(frozen=True)
class Login:
    """A subject that can sign in, resolved from an email."""

    owner: Owner
    password_hash: str
    must_change: bool
    staff: StaffMember | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.staff.roles.split()) if self.staff else frozenset()


@dataclass
class Gate:
    """The sign-in use cases, with the process's throttle, hasher and breach checker."""

    keys: KeyStore
    hasher: PasswordHasher
    throttle: Throttle
    breaches: BreachChecker
    settings: Settings

    # -- resolving who is signing in -------------------------------------------------

    def _login(self, session: Session, email: str, *, staff: bool, now: datetime) -> Login | None:
        if staff:
            member = find_staff(session, self.keys, email=email, now=now)
            if member is None:
                return None
            return Login(
                owner=Owner.staff(member.id),
                password_hash=member.password_hash,
                must_change=member.password_must_change,
                staff=member,
            )
        account = households.find_account(session, self.keys, email=email, now=now)
        if account is None:
            return None
        profile = session.get(Profile, (account.household_id, account.profile_id))
        if profile is None or profile.state != ProfileState.ACTIVE:
            # Being erased (account closure, C10): it signs in no more, and answers like
            # an unknown account.
            return None
        credential = session.get(PasswordCredential, (account.household_id, account.id))
        if credential is None:
            return None
        return Login(
            owner=Owner.account(account.household_id, account.id, account.profile_id),
            password_hash=credential.hash,
            must_change=credential.must_change,
        )

    def _account_key(self, email: str, *, staff: bool, now: datetime) -> str:
        # The throttle's account key: a keyed hash of the email, the same for unknown ones.
        index = households.email_throttle_key(self.keys, email, now=now)
        return ("s:" if staff else "a:") + index.hex()[:40]

    def _device_for_email(
        self, session: Session, email: str, token: str | None, *, staff: bool, now: datetime
    ) -> KnownDevice | None:
        """The known device a cookie names, if it belongs to the account of `email`."""
        if not token or not token.startswith(DEVICE_PREFIX) or len(token) > 100:
            return None
        row = session.scalar(
            select(KnownDevice).where(KnownDevice.token_hash == sessions.token_hash(token))
        )
        if row is None or now - row.last_seen_at > KNOWN_DEVICE_TTL:
            return None
        if staff:
            member = session.get(StaffMember, row.staff_id) if row.staff_id else None
            index = staff_index(self.keys, email, now=now)
            matches = member is not None and hmac.compare_digest(member.email_index, index)
        else:
            account = (
                session.get(Account, (row.household_id, row.account_id)) if row.account_id else None
            )
            matches = account is not None and any(
                hmac.compare_digest(account.email_index, index)
                for index in households.email_indexes(self.keys, email, now=now)
            )
        return row if matches else None

    def _known_device(
        self, session: Session, login: Login | None, token: str | None, now: datetime
    ) -> KnownDevice | None:
        if login is None or not token or not token.startswith(DEVICE_PREFIX) or len(token) > 100:
            return None
        row = session.scalar(
            select(KnownDevice).where(KnownDevice.token_hash == sessions.token_hash(token))
        )
        if row is None or not _row_owned(row, login.owner):
            return None
        if now - row.last_seen_at > KNOWN_DEVICE_TTL:
            return None
        return row

    def _mfa_required(self, session: Session, login: Login) -> bool:
        """Employees always (R4); owners of households with cameras unless turned off (R5)."""
        if login.staff is not None:
            return True
        if not self.settings.mfa_required_for_camera_owners:
            return False
        owner = login.owner
        account = session.get(Account, (owner.household_id, owner.id))
        if account is None or account.role != "owner":
            return False
        camera = session.scalar(
            select(Device.id).where(
                Device.household_id == owner.household_id,
                Device.kind == DeviceKind.CAMERA,
                Device.revoked_at.is_(None),
            )
        )
        return camera is not None

    def stage_for(self, session: Session, login: Login, *, breached: bool) -> SessionStage:
        """What a new session of `login` may do: enrol first, change first, or everything."""
        owner = login.owner
        if self._mfa_required(session, login):
            if login.staff is not None and needs_webauthn(login.roles):
                if not factors.has_webauthn(session, owner):
                    return SessionStage.ENROL
            elif not factors.has_second_factor(session, owner):
                return SessionStage.ENROL
        if breached or login.must_change:
            return SessionStage.CHANGE_PASSWORD
        return SessionStage.FULL

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
        password = password_rules.normalise(password)
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

    def _defended_alert(self, session: Session, *, now: datetime) -> None:
        record(session, tag=AuditTag.DEFENDED_MODE_ENTERED, actor="system", now=now)
        enqueue(
            session,
            self.keys,
            kind=NoticeKind.DEFENDED_MODE,
            owner=None,
            params={"at": now.isoformat(), "minutes": str(self.settings.defended_mode_minutes)},
            now=now,
        )
        log.warning("defended mode entered: credential stuffing suspected")

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

    def _factor_challenge(
        self,
        session: Session,
        login: Login,
        *,
        kind: SessionKind,
        breached: bool,
        now: datetime,
        via_link: bool = False,
    ) -> SignInOutcome:
        owner = login.owner
        # One live second-factor challenge per owner: opening a new one closes the others,
        # so codes cannot be guessed on many challenges at once.
        self.close_challenges(session, owner, now, purposes=(ChallengePurpose.SECOND_FACTOR,))
        token = sessions.new_token(CHALLENGE_PREFIX)
        kinds = sorted({f.kind for f in factors.list_factors(session, owner)})
        webauthn_only = login.staff is not None and needs_webauthn(login.roles)
        if webauthn_only:
            kinds = [FactorKind.WEBAUTHN] if FactorKind.WEBAUTHN in kinds else []
        elif factors.recovery_codes_left(session, owner):
            kinds.append("recovery_code")
        challenge_bytes: bytes | None = None
        options: str | None = None
        if FactorKind.WEBAUTHN in kinds:
            challenge_bytes, options = factors.authentication_options(
                session, owner, rp_id=self.settings.rp_id
            )
        session.add(
            SignInChallenge(
                id=uuid7(),
                **owner.columns(),
                token_hash=sessions.token_hash(token),
                purpose=ChallengePurpose.SECOND_FACTOR,
                session_kind=kind,
                breached=breached,
                via_link=via_link,
                created_at=now,
                expires_at=now + timedelta(minutes=self.settings.challenge_ttl_minutes),
                attempts=0,
                webauthn_challenge=challenge_bytes,
            )
        )
        record(
            session,
            tag=AuditTag.SECOND_FACTOR_REQUIRED,
            actor=owner.ref,
            now=now,
            household_id=owner.household_id,
        )
        return SignInOutcome(
            status="second_factor_required",
            challenge=token,
            factors=[str(k) for k in kinds],
            webauthn_options=options,
        )

    def _ttl(self, kind: SessionKind) -> timedelta:
        """How long a session of `kind` lives: the console's cookie or an API token."""
        hours = (
            self.settings.session_ttl_hours
            if kind == SessionKind.COOKIE
            else self.settings.api_token_ttl_hours
        )
        return timedelta(hours=hours)

    def close_challenges(
        self,
        session: Session,
        owner: Owner,
        now: datetime,
        *,
        purposes: tuple[ChallengePurpose, ...] = (
            ChallengePurpose.SECOND_FACTOR,
            ChallengePurpose.EMAIL_LINK,
            ChallengePurpose.STEP_UP,
        ),
    ) -> None:
        session.execute(
            update(SignInChallenge)
            .where(
                owner.where(SignInChallenge),
                SignInChallenge.purpose.in_([str(p) for p in purposes]),
                SignInChallenge.consumed_at.is_(None),
            )
            .values(consumed_at=now)
        )

    def _send_link(
        self,
        session: Session,
        login: Login,
        *,
        kind: SessionKind,
        breached: bool,
        now: datetime,
        client: Client,
    ) -> None:
        """An emailed one-time link that completes the sign-in (for accounts with no factor)."""
        owner = login.owner
        # One live link per account: a flood of attempts must not flood the mailbox.
        live = session.scalar(
            select(SignInChallenge.id).where(
                owner.where(SignInChallenge),
                SignInChallenge.purpose == ChallengePurpose.EMAIL_LINK,
                SignInChallenge.consumed_at.is_(None),
                SignInChallenge.expires_at > now,
                SignInChallenge.created_at > now - timedelta(minutes=2),
            )
        )
        if live is not None:
            return
        token = sessions.new_token(LINK_PREFIX)
        session.add(
            SignInChallenge(
                id=uuid7(),
                **owner.columns(),
                token_hash=sessions.token_hash(token),
                purpose=ChallengePurpose.EMAIL_LINK,
                session_kind=kind,
                breached=breached,
                created_at=now,
                expires_at=now + timedelta(minutes=self.settings.email_link_ttl_minutes),
                attempts=0,
            )
        )
        enqueue(
            session,
            self.keys,
            kind=NoticeKind.SIGN_IN_LINK,
            owner=owner,
            params={
                "at": now.isoformat(),
                "link": f"{self.settings.origin}/login/link#{token}",
                "address": client.address,
                "device": client.user_agent[:120],
            },
            now=now,
        )
        record(
            session,
            tag=AuditTag.SIGN_IN_LINK_SENT,
            actor=owner.ref,
            now=now,
            household_id=owner.household_id,
        )

    def _complete(
        self,
        session: Session,
        login: Login,
        *,
        attempt: Attempt,
        known: KnownDevice | None,
        kind: SessionKind,
        client: Client,
        stage: SessionStage,
        stepped_up: bool,
        now: datetime,
    ) -> SignInOutcome:
        """Open the session, remember the device, tell the owner about a new one."""
        owner = login.owner
        ttl = self._ttl(kind)
        issued = sessions.open_session(
            session,
            self.keys,
            owner=owner,
            kind=kind,
            stage=stage,
            ttl=ttl,
            user_agent=client.user_agent,
            address=client.address,
            now=now,
            stepped_up=stepped_up,
        )
        self.throttle.reset_account(attempt)
        device_token: str | None = None
        if known is not None:
            known.last_seen_at = now
        else:
            device_token = sessions.new_token(DEVICE_PREFIX)
            session.add(
                KnownDevice(
                    id=uuid7(),
                    **owner.columns(),
                    token_hash=sessions.token_hash(device_token),
                    created_at=now,
                    last_seen_at=now,
                )
            )
            record(
                session,
                tag=AuditTag.NEW_DEVICE_SIGN_IN,
                actor=owner.ref,
                now=now,
                household_id=owner.household_id,
                subject=f"session:{issued.session_id}",
            )
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.NEW_DEVICE_SIGN_IN,
                owner=owner,
                params={
                    "at": now.isoformat(),
                    "address": client.address,
                    "device": client.user_agent[:120],
                },
                now=now,
            )
        return SignInOutcome(
            status="signed_in", issued=issued, device_token=device_token, notices=known is None
        )

    # -- sign-up -----------------------------------------------------------------------

    def sign_up(
        self,
        session: Session,
        *,
        name: str,
        email: str,
        password: str,
        client: Client,
        now: datetime,
    ) -> None:
        """Open a household with its owner's account (S1, R7).

        The new password is checked in full (length, breached and common passwords, the
        service's name, the email) and refused with the reason. An address that already
        has an account gets the same answer, the same hashing work, and a notice instead:
        sign-up does not reveal who has an account (OWASP).
        """
        from tutela.households.models import AccountRole  # noqa: PLC0415
        from tutela.households.rules import check_email  # noqa: PLC0415

        address = check_email(email)
        normalised = password_rules.check_new_password(
            password, email=address, breaches=self.breaches.within(session)
        )
        attempt = Attempt(
            account=self._account_key(address, staff=False, now=now), source=client.address
        )
        verdict = self.throttle.check(attempt, now.timestamp())
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many attempts from your network. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        password_hash = self.hasher.hash(normalised)
        existing = households.find_account(session, self.keys, email=address, now=now)
        if existing is not None:
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.SIGN_UP_EXISTING,
                owner=Owner.account(existing.household_id, existing.id, existing.profile_id),
                params={"at": now.isoformat(), "address": client.address},
                now=now,
            )
            session.commit()
            return
        households.create_home(
            session,
            self.keys,
            spec=households.HomeSpec(
                adults=(
                    households.AdultSpec(
                        name=name,
                        email=address,
                        password_hash=password_hash,
                        role=AccountRole.OWNER,
                    ),
                )
            ),
            now=now,
        )

    # -- the second step: a factor or a link -----------------------------------------

    def _challenge(
        self, session: Session, token: str, purpose: ChallengePurpose, now: datetime
    ) -> SignInChallenge:
        row = session.scalar(
            select(SignInChallenge).where(SignInChallenge.token_hash == sessions.token_hash(token))
        )
        if (
            row is None
            or row.purpose != purpose
            or row.consumed_at is not None
            or row.expires_at <= now
            or row.attempts >= MAX_FACTOR_TRIES
        ):
            raise NotAuthenticated(
                "This sign-in has expired; start again.", code="challenge_expired"
            )
        return row

    def _consume(self, session: Session, row: SignInChallenge, now: datetime) -> None:
        done = session.execute(
            update(SignInChallenge)
            .where(SignInChallenge.id == row.id, SignInChallenge.consumed_at.is_(None))
            .values(consumed_at=now)
        )
        if getattr(done, "rowcount", 0) != 1:
            raise NotAuthenticated(
                "This sign-in has expired; start again.", code="challenge_expired"
            )

    def _login_of_row(self, session: Session, row: Any) -> Login:
        if row.staff_id is not None:
            member = session.get(StaffMember, row.staff_id)
            if member is None or member.disabled_at is not None:
                raise NotAuthenticated("Sign in first.")
            return Login(
                owner=Owner.staff(member.id),
                password_hash=member.password_hash,
                must_change=member.password_must_change,
                staff=member,
            )
        account = session.get(Account, (row.household_id, row.account_id))
        credential = session.get(PasswordCredential, (row.household_id, row.account_id))
        if account is None or credential is None:
            raise NotAuthenticated("Sign in first.")
        return Login(
            owner=Owner.account(account.household_id, account.id, account.profile_id),
            password_hash=credential.hash,
            must_change=credential.must_change,
        )

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
            record(
                session,
                tag=AuditTag.RECOVERY_CODE_USED,
                actor=owner.ref,
                now=now,
                household_id=owner.household_id,
            )
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

        Every wrong code counts as a failure of the account and of the source (S2), and
        each try is reserved atomically before it is checked, so concurrent guesses on one
        challenge cannot exceed MAX_FACTOR_TRIES.
        """
        row = self._challenge(session, challenge, ChallengePurpose.SECOND_FACTOR, now)
        login = self._login_of_row(session, row)
        owner = login.owner
        known = self._known_device(session, login, client.device_token, now)
        attempt = Attempt(
            account=self._account_for_owner(session, login, now),
            source=client.address,
            known_device=known is not None,
        )
        verdict = self.throttle.check(attempt, now.timestamp())
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many failed attempts from your network. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        # At the account's limit (S2) only the holder's own device, or a sign-in that came
        # through the emailed link, may still present a factor: never the open internet.
        if verdict.password_locked and not row.via_link:
            self.close_challenges(session, owner, now)
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
            record(
                session,
                tag=AuditTag.SECOND_FACTOR_FAILURE,
                actor=owner.ref,
                now=now,
                household_id=owner.household_id,
            )
            queued = self._first_failure_notice(session, owner, now)
            if queued:  # S4, at most one such notice per 15 minutes
                enqueue(
                    session,
                    self.keys,
                    kind=NoticeKind.SECOND_FACTOR_FAILED,
                    owner=owner,
                    params={
                        "at": now.isoformat(),
                        "address": client.address,
                        "device": client.user_agent[:120],
                    },
                    now=now,
                )
            if self.throttle.record_failure(attempt, now.timestamp()):
                self._defended_alert(session, now=now)
                queued = True
            session.commit()
            wrong = InvalidCredentials("That code is not right.", code="invalid_second_factor")
            wrong.notices_queued = queued
            raise wrong
        self._consume(session, row, now)
        stage = self.stage_for(session, login, breached=row.breached)
        outcome = self._complete(
            session,
            login,
            attempt=attempt,
            known=known,
            kind=SessionKind(row.session_kind),
            client=client,
            stage=stage,
            stepped_up=True,
            now=now,
        )
        session.commit()
        outcome.notices = True
        return outcome

    @property
    def throttle_max_failures(self) -> int:
        return self.settings.signin_account_max_failures

    def _first_failure_notice(self, session: Session, owner: Owner, now: datetime) -> bool:
        """At most one 'second factor failed' notice per owner per 15 minutes (no floods)."""
        from tutela.notices.models import OutboxMessage  # noqa: PLC0415

        cols = owner.columns()
        recent = session.scalar(
            select(OutboxMessage.id).where(
                OutboxMessage.kind == NoticeKind.SECOND_FACTOR_FAILED,
                OutboxMessage.account_id == cols["account_id"]
                if not owner.is_staff
                else OutboxMessage.staff_id == owner.id,
                OutboxMessage.created_at > now - timedelta(minutes=15),
            )
        )
        return recent is None

    def _account_for_owner(self, session: Session, login: Login, now: datetime) -> str:
        from tutela.identity.owners import email_of  # noqa: PLC0415

        email = email_of(session, self.keys, login.owner, now=now)
        return self._account_key(email, staff=login.staff is not None, now=now)

    def complete_link(
        self, session: Session, *, token: str, client: Client, now: datetime
    ) -> SignInOutcome:
        """The emailed link: it stands in for the password (or proves the mailbox on a
        risky sign-in). An owner with a second factor must still present it."""
        row = self._challenge(session, token, ChallengePurpose.EMAIL_LINK, now)
        login = self._login_of_row(session, row)
        if login.staff is not None:
            raise NotAuthenticated(
                "This sign-in has expired; start again.", code="challenge_expired"
            )
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
        stage = self.stage_for(session, login, breached=row.breached)
        outcome = self._complete(
            session,
            login,
            attempt=attempt,
            known=known,
            kind=SessionKind(row.session_kind),
            client=client,
            stage=stage,
            stepped_up=False,
            now=now,
        )
        session.commit()
        return outcome

    # -- in a session: step-up and password change ------------------------------------

    def login_of(self, session: Session, owner: Owner) -> Login:
        class _Row:
            staff_id = owner.id if owner.is_staff else None
            household_id = owner.household_id
            account_id = None if owner.is_staff else owner.id

        return self._login_of_row(session, _Row())

    def _guarded_attempt(
        self, session: Session, login: Login, client: Client, now: datetime
    ) -> Attempt:
        """The throttle's view of a check made inside a session (step-up, password change):
        refused while the source is slowed down or the account is at its limit (S2)."""
        attempt = Attempt(
            account=self._account_for_owner(session, login, now), source=client.address
        )
        verdict = self.throttle.check(attempt, now.timestamp())
        if not verdict.allowed:
            raise TooManyAttempts(
                "Too many failed attempts. Wait a little and try again.",
                retry_after=round(verdict.retry_after, 1),
            )
        if verdict.account_failures >= self.throttle_max_failures:
            raise Forbidden(
                "Too many failed attempts on this account; sign in again.",
                code="account_limit_reached",
            )
        return attempt

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
        attempt = self._guarded_attempt(session, login, client, now)
        challenge_bytes: bytes | None = None
        if webauthn_token is not None:
            row = self._challenge(session, webauthn_token, ChallengePurpose.STEP_UP, now)
            if not _row_owned(row, owner):
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
        else:
            ok = password is not None and self.hasher.verify(
                login.password_hash, password_rules.normalise(password)
            )
        if not ok:
            self.throttle.record_failure(attempt, now.timestamp())
            record(
                session,
                tag=AuditTag.SECOND_FACTOR_FAILURE,
                actor=owner.ref,
                now=now,
                household_id=owner.household_id,
            )
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
        record(
            session,
            tag=AuditTag.STEP_UP,
            actor=owner.ref,
            now=now,
            household_id=owner.household_id,
            subject=f"session:{principal.session_id}",
        )
        session.commit()

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
        token = sessions.new_token(CHALLENGE_PREFIX)
        session.add(
            SignInChallenge(
                id=uuid7(),
                **owner.columns(),
                token_hash=sessions.token_hash(token),
                purpose=ChallengePurpose.STEP_UP,
                session_kind=SessionKind.API,
                breached=False,
                created_at=now,
                expires_at=now + timedelta(minutes=self.settings.challenge_ttl_minutes),
                attempts=0,
                webauthn_challenge=challenge_bytes,
            )
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
        attempt = self._guarded_attempt(session, login, client, now)
        if not self.hasher.verify(login.password_hash, password_rules.normalise(current_password)):
            self.throttle.record_failure(attempt, now.timestamp())
            record(
                session,
                tag=AuditTag.ACCOUNT_LOGIN_FAILURE,
                actor=owner.ref,
                now=now,
                household_id=owner.household_id,
            )
            session.commit()
            raise InvalidCredentials("The current password is not right.")
        email = self._email(session, owner, now)
        normalised = password_rules.check_new_password(
            new_password, email=email, breaches=self.breaches.within(session)
        )
        if self.hasher.verify(login.password_hash, normalised):
            raise InvalidInput("Choose a password you have not used here.", code="password_reused")
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
        record(
            session,
            tag=AuditTag.PASSWORD_CHANGED,
            actor=owner.ref,
            now=now,
            household_id=owner.household_id,
        )
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

    def _email(self, session: Session, owner: Owner, now: datetime) -> str:
        from tutela.identity.owners import email_of  # noqa: PLC0415

        return email_of(session, self.keys, owner, now=now)

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


def _row_owned(row: Any, owner: Owner) -> bool:
    if owner.is_staff:
        return bool(row.staff_id == owner.id)
    return bool(row.account_id == owner.id and row.household_id == owner.household_id)
