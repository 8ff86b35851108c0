"""Use cases of the identity part: signing in and out, and resolving a session.

The seam for stronger sign-in: `sign_in` is where throttles (checked before any hash)
and second factors (checked after the password) attach.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tutela.audit.service import AuditTag, record
from tutela.core.errors import InvalidCredentials, NotAuthenticated
from tutela.core.ids import uuid7
from tutela.households import service as households
from tutela.households.models import Account
from tutela.identity.models import PasswordCredential, SessionKind, SignInSession
from tutela.identity.passwords import PasswordHasher
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


@dataclass(frozen=True)
class IssuedSession:
    token: str
    principal: Principal
    expires_at: datetime


def _client_aad(session_id: uuid.UUID) -> bytes:
    return b"tutela:session-client:" + session_id.bytes


def session_client(keys: KeyStore, row: SignInSession, account: Account) -> dict[str, str]:
    """The address and user agent a session signed in from (for the list of sessions)."""
    key = keys.profile_key(household_id=account.household_id, profile_id=account.profile_id)
    data: dict[str, str] = json.loads(
        crypto.open_sealed(key, row.client_sealed, aad=_client_aad(row.id))
    )
    return data


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
            household_id=household_id, account_id=account_id, hash=password_hash, updated_at=now
        )
    )


def sign_in(
    session: Session,
    keys: KeyStore,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    kind: SessionKind,
    ttl: timedelta,
    user_agent: str,
    address: str,
    now: datetime,
) -> IssuedSession:
    """Check a password and open a session; the same refusal whether or not the account exists.

    Unknown accounts pay for a dummy argon2id verification, so neither the answer nor its
    timing tells an attacker which emails have accounts (OWASP, S4).
    """
    account = households.find_account(session, keys, email=email, now=now)
    credential = (
        session.get(PasswordCredential, (account.household_id, account.id)) if account else None
    )
    if account is None or not hasher.verify(credential.hash if credential else None, password):
        record(
            session,
            tag=AuditTag.ACCOUNT_LOGIN_FAILURE,
            actor=f"account:{account.id}" if account else "anonymous",
            now=now,
            household_id=account.household_id if account else None,
        )
        session.commit()
        raise InvalidCredentials("The email or password is not right.")
    assert credential is not None
    if hasher.needs_rehash(credential.hash):
        credential.hash = hasher.hash(password)
        credential.updated_at = now
    token = f"{SESSION_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    session_id = uuid7()
    client = json.dumps({"user_agent": user_agent[:200], "address": address[:64]}).encode()
    profile_key = keys.profile_key(household_id=account.household_id, profile_id=account.profile_id)
    row = SignInSession(
        id=session_id,
        household_id=account.household_id,
        account_id=account.id,
        kind=kind,
        token_hash=_token_hash(token),
        created_at=now,
        expires_at=now + ttl,
        last_seen_at=now,
        client_sealed=crypto.seal(profile_key, client, aad=_client_aad(session_id)),
    )
    session.add(row)
    record(
        session,
        tag=AuditTag.ACCOUNT_LOGIN_SUCCESS,
        actor=f"account:{account.id}",
        now=now,
        household_id=account.household_id,
        subject=f"session:{row.id}",
    )
    session.commit()
    return IssuedSession(
        token=token, principal=_principal(account, row.id), expires_at=row.expires_at
    )


def _principal(account: Account, session_id: uuid.UUID) -> Principal:
    return Principal(
        account_id=account.id,
        household_id=account.household_id,
        profile_id=account.profile_id,
        role=account.role,
        session_id=session_id,
    )


def authenticate(session: Session, *, token: str, now: datetime) -> Principal:
    """The principal of a live session token; expired, ended or unknown tokens are refused."""
    if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > 200:
        raise NotAuthenticated("Sign in first.")
    row = session.scalar(
        select(SignInSession).where(SignInSession.token_hash == _token_hash(token))
    )
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise NotAuthenticated("Your session has ended; sign in again.", code="session_ended")
    account = session.get(Account, (row.household_id, row.account_id))
    if account is None:
        raise NotAuthenticated("Your session has ended; sign in again.", code="session_ended")
    if now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
        row.last_seen_at = now
        session.commit()
    return _principal(account, row.id)


def sign_out(session: Session, *, principal: Principal, now: datetime) -> None:
    row = session.get(SignInSession, principal.session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        record(
            session,
            tag=AuditTag.ACCOUNT_LOGOUT,
            actor=f"account:{principal.account_id}",
            now=now,
            household_id=principal.household_id,
            subject=f"session:{row.id}",
        )
        session.commit()
