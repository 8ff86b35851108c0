"""What every step of signing in shares (R4-R7, S1-S5): who is signing in, their known
device, what a new session of theirs may do, challenges, the emailed link, and opening the
session. The steps themselves are in `signin` (the password), `second_step` (a factor or
the link), `in_session` (step-up, password change) and `signup`.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import (
    NotAuthenticated,
    TooManyAttempts,
)
from tutela.core.ids import uuid7
from tutela.households import service as households
from tutela.households.models import Account, Profile, ProfileState
from tutela.identity import camera, factors
from tutela.identity import service as sessions
from tutela.identity.admission import Admission, busy
from tutela.identity.breached import BreachChecker
from tutela.identity.models import (
    ChallengePurpose,
    FactorKind,
    KnownDevice,
    PasswordCredential,
    SessionKind,
    SessionStage,
    SignInChallenge,
    StaffMember,
)
from tutela.identity.owners import Owner, record_by
from tutela.identity.passwords import PasswordHasher
from tutela.identity.staff import find_staff, needs_webauthn, staff_index
from tutela.identity.throttle import Attempt, Throttle, Verdict, wait_text
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


def too_many(retry_after: float, what: str = "failed sign-ins") -> TooManyAttempts:
    """The throttle's refusal (429), saying how long to wait; the door sends the same."""
    return TooManyAttempts(
        f"Too many {what} from your network. {wait_text(retry_after)}",
        retry_after=round(retry_after, 1),
    )


@dataclass
class Guess:
    """One attempt's slot in the throttle, reserved by `Throttle.begin` (S2, S4).

    Settled once: a failure or a success consumes the slot; `release` (always called on
    the way out) drops it if neither happened, e.g. when the attempt raised.
    """

    throttle: Throttle
    attempt: Attempt
    now: float
    verdict: Verdict
    settled: bool = False

    def fail(self, *, breached: bool = False) -> bool:
        """Count the failure; True if it switched defended mode on."""
        self.settled = True
        return self.throttle.record_failure(self.attempt, self.now, breached=breached)

    def succeed(self, *, breached: bool = False) -> bool:
        self.settled = True
        return self.throttle.record_success(self.attempt, self.now, breached=breached)

    def release(self) -> None:
        if not self.settled and self.verdict.reserved:
            self.settled = True
            self.throttle.release(self.attempt, self.now)


@dataclass(frozen=True)
class Client:
    """Where an attempt comes from. `device_token` is the known-device cookie, if any."""

    address: str
    user_agent: str = ""
    device_token: str | None = None

    def where(self) -> dict[str, str]:
        """Where the request came from, as notices show it (the user agent shortened)."""
        return {"address": self.address, "device": self.user_agent[:120]}


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
class GateCore:
    """The sign-in ports and what the steps share: the process's throttle, hasher,
    admission to hashing and breach checker, and the key store for sealed fields."""

    keys: KeyStore
    hasher: PasswordHasher
    throttle: Throttle
    breaches: BreachChecker
    settings: Settings
    admission: Admission

    # -- admission to argon2id work (R6) ----------------------------------------------

    def _spend_new_device_hash(self, *, defended: bool, now: datetime) -> None:
        """In defended mode a new device's hash spends from the global budget, or is
        refused at once with `sign_in_busy`: no account lookup, no hash (R6)."""
        if not defended:
            return
        wait = self.admission.take(now.timestamp())
        if wait > 0.0:
            raise busy(wait)

    # -- the throttle ------------------------------------------------------------------

    def _begin(self, attempt: Attempt, now: datetime, what: str = "failed sign-ins") -> Guess:
        """Check the throttle and reserve the attempt's slot in one step, before any hash;
        refused (429, saying how long) while the source is slowed down."""
        ts = now.timestamp()
        verdict = self.throttle.begin(attempt, ts)
        if not verdict.allowed:
            raise too_many(verdict.retry_after, what)
        return Guess(self.throttle, attempt, ts, verdict)

    def _device_failure(self, session: Session, known: KnownDevice) -> None:
        """A known device that keeps sending wrong passwords or codes stops being trusted
        after KNOWN_DEVICE_MAX_FAILURES of them (S2)."""
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
        # One query whether or not the account exists, so the database time of a wrong
        # password does not tell a real account from an unknown email (S4).
        found = session.execute(
            select(Account, PasswordCredential)
            .join(
                Profile,
                (Profile.household_id == Account.household_id) & (Profile.id == Account.profile_id),
            )
            .join(
                PasswordCredential,
                (PasswordCredential.household_id == Account.household_id)
                & (PasswordCredential.account_id == Account.id),
            )
            .where(
                Account.email_index.in_(households.email_indexes(self.keys, email, now=now)),
                # Being erased (account closure, C10): it signs in no more, and answers
                # like an unknown account.
                Profile.state == ProfileState.ACTIVE,
            )
        ).first()
        if found is None:
            return None
        account, credential = found
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
        if row is None or not row_owned(row, login.owner):
            return None
        if now - row.last_seen_at > KNOWN_DEVICE_TTL:
            return None
        return row

    def _mfa_required(self, session: Session, login: Login) -> bool:
        """Employees always (R4); customers who can see camera media unless turned off (R5):
        the owner, the other parent and any adult whose profiles a camera films."""
        if login.staff is not None:
            return True
        if not self.settings.mfa_required_for_camera_viewers:
            return False
        return camera.account_sees_camera_media(session, login.owner)

    def camera_factor_missing(
        self, session: Session, owner: Owner, profile_ids: frozenset[uuid.UUID]
    ) -> bool:
        """The live check of every media route (R5); see `identity.camera`."""
        if owner.is_staff or not self.settings.mfa_required_for_camera_viewers:
            return False
        return camera.camera_factor_missing(session, owner=owner, profile_ids=profile_ids)

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
        token = self.add_challenge(
            session,
            owner,
            ChallengePurpose.SECOND_FACTOR,
            kind=kind,
            breached=breached,
            minutes=self.settings.challenge_ttl_minutes,
            now=now,
            via_link=via_link,
            webauthn_challenge=challenge_bytes,
        )
        record_by(session, owner, AuditTag.SECOND_FACTOR_REQUIRED, now=now)
        return SignInOutcome(
            status="second_factor_required",
            challenge=token,
            factors=[str(k) for k in kinds],
            webauthn_options=options,
        )

    def add_challenge(
        self,
        session: Session,
        owner: Owner,
        purpose: ChallengePurpose,
        *,
        kind: SessionKind,
        breached: bool,
        minutes: int,
        now: datetime,
        via_link: bool = False,
        webauthn_challenge: bytes | None = None,
    ) -> str:
        """A new single-use challenge of `owner` that lives `minutes`; returns its token,
        of which only a hash is stored (an emailed link's token starts `LINK_PREFIX`)."""
        prefix = LINK_PREFIX if purpose == ChallengePurpose.EMAIL_LINK else CHALLENGE_PREFIX
        token = sessions.new_token(prefix)
        session.add(
            SignInChallenge(
                id=uuid7(),
                **owner.columns(),
                token_hash=sessions.token_hash(token),
                purpose=purpose,
                session_kind=kind,
                breached=breached,
                via_link=via_link,
                created_at=now,
                expires_at=now + timedelta(minutes=minutes),
                attempts=0,
                webauthn_challenge=webauthn_challenge,
            )
        )
        return token

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
        notice: NoticeKind = NoticeKind.SIGN_IN_LINK,
    ) -> None:
        """An emailed one-time link that completes the sign-in (for accounts with no factor,
        from a device not seen before), or proves the mailbox of a new account (`notice`
        SIGN_UP_CONFIRM)."""
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
        token = self.add_challenge(
            session,
            owner,
            ChallengePurpose.EMAIL_LINK,
            kind=kind,
            breached=breached,
            minutes=self.settings.email_link_ttl_minutes,
            now=now,
        )
        enqueue(
            session,
            self.keys,
            kind=notice,
            owner=owner,
            params={
                "at": now.isoformat(),
                "link": f"{self.settings.origin}/login/link#{token}",
                **client.where(),
            },
            now=now,
        )
        record_by(session, owner, AuditTag.SIGN_IN_LINK_SENT, now=now)

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
            record_by(
                session,
                owner,
                AuditTag.NEW_DEVICE_SIGN_IN,
                now=now,
                subject=f"session:{issued.session_id}",
            )
            enqueue(
                session,
                self.keys,
                kind=NoticeKind.NEW_DEVICE_SIGN_IN,
                owner=owner,
                params={"at": now.isoformat(), **client.where()},
                now=now,
            )
        return SignInOutcome(
            status="signed_in", issued=issued, device_token=device_token, notices=known is None
        )

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

    def login_of(self, session: Session, owner: Owner) -> Login:
        class _Row:
            staff_id = owner.id if owner.is_staff else None
            household_id = owner.household_id
            account_id = None if owner.is_staff else owner.id

        return self._login_of_row(session, _Row())

    def _email(self, session: Session, owner: Owner, now: datetime) -> str:
        from tutela.identity.owners import email_of  # noqa: PLC0415

        return email_of(session, self.keys, owner, now=now)


def row_owned(row: Any, owner: Owner) -> bool:
    if owner.is_staff:
        return bool(row.staff_id == owner.id)
    return bool(row.account_id == owner.id and row.household_id == owner.household_id)
