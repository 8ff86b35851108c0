"""Sessions: opening, resolving, listing and ending them (R6, S4).

Sessions are server-side rows; a token is a random string of which only a SHA-256 is
stored. The signing-in device's address and user agent are sealed under the owner's
key. Signing in itself (throttles, factors, links) lives in `identity.signin`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import NotAuthenticated, NotFound
from tutela.core.ids import uuid7
from tutela.households.models import Account
from tutela.identity.models import (
    KnownDevice,
    PasswordCredential,
    SessionKind,
    SessionStage,
    SignInSession,
    StaffMember,
)
from tutela.identity.owners import Owner, record_by
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

SESSION_TOKEN_PREFIX = "tss_"  # noqa: S105 (a public prefix, not a secret)
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a signed-in customer account."""

    account_id: uuid.UUID
    household_id: uuid.UUID
    profile_id: uuid.UUID
    role: str
    session_id: uuid.UUID
    stage: str = SessionStage.FULL
    stepped_up_at: datetime | None = None

    @property
    def owner(self) -> Owner:
        return Owner.account(self.household_id, self.account_id, self.profile_id)


@dataclass(frozen=True)
class StaffPrincipal:
    """A signed-in employee of the operator."""

    staff_id: uuid.UUID
    roles: frozenset[str]
    session_id: uuid.UUID
    stage: str = SessionStage.FULL
    stepped_up_at: datetime | None = None

    @property
    def owner(self) -> Owner:
        return Owner.staff(self.staff_id)


AnyPrincipal = Principal | StaffPrincipal


@dataclass(frozen=True)
class IssuedSession:
    token: str
    session_id: uuid.UUID
    stage: str
    expires_at: datetime


@dataclass(frozen=True)
class SessionView:
    """One line of the list of active sessions."""

    id: uuid.UUID
    kind: str
    created_at: datetime
    last_seen_at: datetime
    address: str
    user_agent: str
    current: bool


def _client_aad(session_id: uuid.UUID) -> bytes:
    return b"tutela:session-client:" + session_id.bytes


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(32)}"


def add_password(
    session: Session,
    *,
    household_id: uuid.UUID,
    account_id: uuid.UUID,
    password_hash: str,
    now: datetime,
) -> None:
    """Attach a password hash to a new account (the caller commits)."""
    session.add(
        PasswordCredential(
            household_id=household_id,
            account_id=account_id,
            hash=password_hash,
            updated_at=now,
            must_change=False,
        )
    )


def open_session(
    session: Session,
    keys: KeyStore,
    *,
    owner: Owner,
    kind: SessionKind,
    stage: SessionStage,
    ttl: timedelta,
    user_agent: str,
    address: str,
    now: datetime,
    stepped_up: bool = False,
) -> IssuedSession:
    """Add a session row (the caller commits) and return its token, shown once."""
    token = new_token(SESSION_TOKEN_PREFIX)
    session_id = uuid7()
    client = json.dumps({"user_agent": user_agent[:200], "address": address[:64]}).encode()
    row = SignInSession(
        id=session_id,
        **owner.columns(),
        kind=kind,
        stage=stage,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + ttl,
        last_seen_at=now,
        stepped_up_at=now if stepped_up else None,
        client_sealed=crypto.seal(
            owner.sealing_key(keys, now=now), client, aad=_client_aad(session_id)
        ),
    )
    session.add(row)
    record_by(
        session, owner, AuditTag.ACCOUNT_LOGIN_SUCCESS, now=now, subject=f"session:{session_id}"
    )
    return IssuedSession(token=token, session_id=session_id, stage=stage, expires_at=row.expires_at)


def session_client(
    keys: KeyStore, row: SignInSession, owner: Owner, *, now: datetime
) -> dict[str, str]:
    """The address and user agent a session signed in from (for the list of sessions)."""
    data: dict[str, str] = json.loads(
        crypto.open_sealed(
            owner.sealing_key(keys, now=now), row.client_sealed, aad=_client_aad(row.id)
        )
    )
    return data


def authenticate(session: Session, *, token: str, now: datetime) -> AnyPrincipal:
    """The principal of a live session token; expired, ended or unknown tokens are refused."""
    if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > 200:
        raise NotAuthenticated("Sign in first.")
    row = session.scalar(select(SignInSession).where(SignInSession.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise NotAuthenticated("Your session has ended; sign in again.", code="session_ended")
    principal: AnyPrincipal
    if row.staff_id is not None:
        member = session.get(StaffMember, row.staff_id)
        if member is None or member.disabled_at is not None:
            raise NotAuthenticated("Your session has ended; sign in again.", code="session_ended")
        principal = StaffPrincipal(
            staff_id=member.id,
            roles=frozenset(member.roles.split()),
            session_id=row.id,
            stage=row.stage,
            stepped_up_at=row.stepped_up_at,
        )
    else:
        account = session.get(Account, (row.household_id, row.account_id))
        if account is None:
            raise NotAuthenticated("Your session has ended; sign in again.", code="session_ended")
        principal = Principal(
            account_id=account.id,
            household_id=account.household_id,
            profile_id=account.profile_id,
            role=account.role,
            session_id=row.id,
            stage=row.stage,
            stepped_up_at=row.stepped_up_at,
        )
    if now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
        row.last_seen_at = now
        session.commit()
    return principal


def _end(session: Session, row: SignInSession, *, actor: str, now: datetime) -> None:
    row.revoked_at = now
    record(
        session,
        tag=AuditTag.ACCOUNT_LOGOUT,
        actor=actor,
        now=now,
        household_id=row.household_id,
        subject=f"session:{row.id}",
    )


def sign_out(
    session: Session,
    *,
    principal: AnyPrincipal,
    now: datetime,
    forget_device: str | None = None,
) -> None:
    """End this session; with `forget_device` (the known-device token of the browser or
    app signing out, "this is a shared computer"), forget that device too, so the next
    sign-in from it is a new device's (S2: no more skipping source delays from it)."""
    row = session.get(SignInSession, principal.session_id)
    if row is not None and row.revoked_at is None:
        _end(session, row, actor=principal.owner.ref, now=now)
    if forget_device:
        forget_known_device(session, owner=principal.owner, token=forget_device, now=now)
    session.commit()


def forget_known_device(session: Session, *, owner: Owner, token: str, now: datetime) -> bool:
    """Forget the owner's known device named by `token`; another owner's is left alone.
    The caller commits."""
    forgotten = session.execute(
        delete(KnownDevice).where(
            owner.where(KnownDevice), KnownDevice.token_hash == token_hash(token[:100])
        )
    )
    if not getattr(forgotten, "rowcount", 0):
        return False
    record_by(session, owner, AuditTag.KNOWN_DEVICE_FORGOTTEN, now=now)
    return True


def _live(owner: Owner, now: datetime) -> list[object]:
    return [
        owner.where(SignInSession),
        SignInSession.revoked_at.is_(None),
        SignInSession.expires_at > now,
    ]


def list_sessions(
    session: Session, keys: KeyStore, *, principal: AnyPrincipal, now: datetime
) -> list[SessionView]:
    """The owner's active sessions, newest first, with where each signed in from (S4)."""
    owner = principal.owner
    rows = session.scalars(
        select(SignInSession).where(*_live(owner, now)).order_by(SignInSession.id.desc())  # type: ignore[arg-type]
    ).all()
    views = []
    for row in rows:
        client = session_client(keys, row, owner, now=now)
        views.append(
            SessionView(
                id=row.id,
                kind=row.kind,
                created_at=row.created_at,
                last_seen_at=row.last_seen_at,
                address=client.get("address", ""),
                user_agent=client.get("user_agent", ""),
                current=row.id == principal.session_id,
            )
        )
    return views


def end_session(
    session: Session, *, principal: AnyPrincipal, session_id: uuid.UUID, now: datetime
) -> None:
    """End one of the owner's sessions; another owner's id answers 404."""
    row = session.get(SignInSession, session_id)
    owner = principal.owner
    if row is None or not _owns(row, owner) or row.revoked_at is not None:
        raise NotFound("No such session.", code="session_not_found")
    _end(session, row, actor=owner.ref, now=now)
    session.commit()


def _owns(row: SignInSession, owner: Owner) -> bool:
    if owner.is_staff:
        return row.staff_id == owner.id
    return row.account_id == owner.id and row.household_id == owner.household_id


def end_all(session: Session, *, owner: Owner, now: datetime, keep: uuid.UUID | None = None) -> int:
    """End every live session of `owner` except `keep`, and forget its known devices (a
    device must sign in afresh to skip source delays again); the caller commits."""
    session.execute(delete(KnownDevice).where(owner.where(KnownDevice)))
    clauses = _live(owner, now)
    if keep is not None:
        clauses.append(SignInSession.id != keep)
    ended = session.execute(
        update(SignInSession).where(*clauses).values(revoked_at=now)  # type: ignore[arg-type]
    )
    count = int(getattr(ended, "rowcount", 0) or 0)
    if count:
        record_by(session, owner, AuditTag.SESSIONS_ENDED, now=now, subject=f"sessions:{count}")
    return count


def mark_stepped_up(session: Session, *, session_id: uuid.UUID, now: datetime) -> None:
    row = session.get(SignInSession, session_id)
    if row is not None:
        row.stepped_up_at = now


def set_stage(session: Session, *, session_id: uuid.UUID, stage: SessionStage) -> None:
    row = session.get(SignInSession, session_id)
    if row is not None:
        row.stage = stage
