"""Second factors: TOTP (RFC 6238), WebAuthn credentials (W3C WebAuthn L2/L3), recovery codes.

Every employee signs in with a second factor, a phishing-resistant one (WebAuthn) where
a path to customer content exists (R4); customers have one too (R5, S4).

Functions take the caller's Session and never commit. Whatever may succeed only once (a
TOTP time step, a WebAuthn ceremony, a signature counter, a recovery code) is claimed
with one conditional UPDATE whose row count says whether this request won, so two
concurrent requests cannot both succeed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import pyotp
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import Update, delete, func, select, update
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tutela.core.errors import Conflict, InvalidInput, NotFound
from tutela.core.ids import uuid7
from tutela.identity.key_uri import base32_secret, key_uri
from tutela.identity.models import (
    ChallengePurpose,
    Factor,
    FactorKind,
    RecoveryCode,
    SessionKind,
    SignInChallenge,
)
from tutela.identity.owners import Owner
from tutela.vault import crypto
from tutela.vault.keystore import KeyStore

# RFC 6238 defaults, which every authenticator app implements: HMAC-SHA-1, 6 digits, 30 s.
TOTP_DIGITS: Final = 6
TOTP_INTERVAL: Final = 30
# One step either side absorbs clock drift and typing time (RFC 6238 §5.2).
TOTP_WINDOW: Final = 1
# 160-bit secrets, the length RFC 4226 §4 recommends.
TOTP_SECRET_BYTES: Final = 20
MAX_TOTP_FACTORS: Final = 5
# An enrolment not confirmed within this time is abandoned: it no longer counts towards
# the limit and can no longer be confirmed.
TOTP_ENROLMENT_TTL: Final = timedelta(hours=1)

LABEL_MAX: Final = 64

RECOVERY_KEY = "recovery-codes"
# No 0/o, 1/i/l: codes are read off paper. 31 symbols, 10 of them: about 49.5 bits each.
RECOVERY_ALPHABET: Final = "23456789abcdefghjkmnpqrstuvwxyz"
RECOVERY_LENGTH: Final = 10

_WEBAUTHN_FAILED = "webauthn_failed"


@dataclass(frozen=True)
class TotpEnrolment:
    """A TOTP factor waiting for its first code; the secret is shown to the user once."""

    factor_id: uuid.UUID
    secret: str  # base32 without padding, as authenticator apps expect
    provisioning_uri: str  # the otpauth:// key URI (identity/key_uri.py), for the QR code


# --- shared ----------------------------------------------------------------------------


def _claimed(session: Session, statement: Update) -> bool:
    """Run a conditional UPDATE; True when it changed exactly one row (this request won)."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _clean_label(label: str) -> str:
    cleaned = " ".join(label.split())
    if not cleaned or len(cleaned) > LABEL_MAX:
        raise InvalidInput(
            f"A factor's name must have 1 to {LABEL_MAX} characters.", code="invalid_label"
        )
    return cleaned


def list_factors(session: Session, owner: Owner) -> list[Factor]:
    """The owner's confirmed factors, oldest first."""
    rows = session.scalars(
        select(Factor)
        .where(owner.where(Factor), Factor.confirmed_at.is_not(None))
        .order_by(Factor.created_at, Factor.id)
    )
    return list(rows)


def has_second_factor(session: Session, owner: Owner) -> bool:
    """Whether the owner has a confirmed TOTP or WebAuthn factor (R4, R5)."""
    found = session.scalar(
        select(Factor.id).where(owner.where(Factor), Factor.confirmed_at.is_not(None)).limit(1)
    )
    return found is not None


def has_webauthn(session: Session, owner: Owner) -> bool:
    """Whether the owner has a phishing-resistant factor, as R4 asks of media roles."""
    found = session.scalar(
        select(Factor.id)
        .where(
            owner.where(Factor),
            Factor.kind == FactorKind.WEBAUTHN,
            Factor.confirmed_at.is_not(None),
        )
        .limit(1)
    )
    return found is not None


def remove_factor(session: Session, owner: Owner, factor_id: uuid.UUID) -> Factor:
    """Delete one of the owner's factors (confirmed or pending); another's is NotFound.

    Whether the owner may be left without a factor (R4, R5) is the caller's decision.
    """
    factor = session.scalar(select(Factor).where(owner.where(Factor), Factor.id == factor_id))
    if factor is None:
        raise NotFound("No such factor.", code="factor_not_found")
    session.delete(factor)
    session.flush()
    return factor


# --- TOTP (RFC 6238 over RFC 4226) -----------------------------------------------------


def _secret_aad(factor_id: uuid.UUID) -> bytes:
    return b"tutela:totp-secret:" + factor_id.bytes


def _totp(secret: bytes) -> pyotp.TOTP:
    return pyotp.TOTP(base64.b32encode(secret).decode(), digits=TOTP_DIGITS, interval=TOTP_INTERVAL)


def _open_secret(keys: KeyStore, owner: Owner, factor: Factor, *, now: datetime) -> bytes:
    assert factor.secret_sealed is not None
    return crypto.open_sealed(
        owner.sealing_key(keys, now=now), factor.secret_sealed, aad=_secret_aad(factor.id)
    )


def _totp_code(code: str) -> str | None:
    """The code as six ASCII digits (spaces such as "123 456" removed), or None."""
    digits = code.replace(" ", "")
    if len(digits) != TOTP_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return digits


def matching_totp_step(secret: bytes, code: str, *, now: datetime) -> int | None:
    """The RFC 6238 time step within ±TOTP_WINDOW of `now` whose code is `code`, or None.

    A pure rule: whether that step was already used is the caller's to check.
    """
    digits = _totp_code(code)
    if digits is None:
        return None
    try:
        return _totp(secret).verify_and_get_timecode(digits, for_time=now, valid_window=TOTP_WINDOW)
    except OTPVerificationError:
        return None


def begin_totp(
    session: Session,
    keys: KeyStore,
    owner: Owner,
    *,
    label: str,
    issuer: str = "Tutela",
    account_name: str,
    now: datetime,
    secret: bytes | None = None,
) -> TotpEnrolment:
    """Start a TOTP enrolment: a fresh 160-bit secret, sealed under the owner's key.

    `secret` is for the demo home only, whose authenticator key is published.

    The factor stays unconfirmed, and useless for sign-in, until `confirm_totp` sees a
    code made from it. At most MAX_TOTP_FACTORS TOTP factors (pending or confirmed).
    """
    name = _clean_label(label)
    session.execute(
        delete(Factor)
        .where(
            owner.where(Factor),
            Factor.kind == FactorKind.TOTP,
            Factor.confirmed_at.is_(None),
            Factor.created_at < now - TOTP_ENROLMENT_TTL,
        )
        .execution_options(synchronize_session=False)
    )
    count = session.scalar(
        select(func.count())
        .select_from(Factor)
        .where(owner.where(Factor), Factor.kind == FactorKind.TOTP)
    )
    if (count or 0) >= MAX_TOTP_FACTORS:
        raise Conflict(
            f"An account can have at most {MAX_TOTP_FACTORS} authenticator apps.",
            code="too_many_factors",
        )
    factor_id = uuid7()
    secret = secret or secrets.token_bytes(TOTP_SECRET_BYTES)
    session.add(
        Factor(
            id=factor_id,
            **owner.columns(),
            kind=FactorKind.TOTP,
            label=name,
            created_at=now,
            secret_sealed=crypto.seal(
                owner.sealing_key(keys, now=now), secret, aad=_secret_aad(factor_id)
            ),
            last_step=-1,
            sign_count=0,
        )
    )
    session.flush()
    return TotpEnrolment(
        factor_id=factor_id,
        secret=base32_secret(secret),
        provisioning_uri=key_uri(
            secret=secret,
            account_name=account_name,
            issuer=issuer,
            digits=TOTP_DIGITS,
            period=TOTP_INTERVAL,
            algorithm="SHA1",
        ),
    )


def confirm_totp(
    session: Session,
    keys: KeyStore,
    owner: Owner,
    factor_id: uuid.UUID,
    code: str,
    *,
    now: datetime,
) -> Factor:
    """Confirm a pending TOTP factor with a code from the user's app.

    The code's time step is recorded as used, so the same code cannot then sign in.
    """
    factor = session.scalar(
        select(Factor).where(
            owner.where(Factor), Factor.id == factor_id, Factor.kind == FactorKind.TOTP
        )
    )
    if factor is None:
        raise NotFound("No such factor.", code="factor_not_found")
    if factor.confirmed_at is not None:
        raise Conflict("This authenticator app is already set up.", code="already_confirmed")
    if factor.created_at < now - TOTP_ENROLMENT_TTL:
        raise InvalidInput("This set-up has expired; start again.", code="enrolment_expired")
    step = matching_totp_step(_open_secret(keys, owner, factor, now=now), code, now=now)
    if step is None:
        raise InvalidInput("That code is not right.", code="invalid_code")
    won = _claimed(
        session,
        update(Factor)
        .where(Factor.id == factor.id, Factor.confirmed_at.is_(None), Factor.last_step < step)
        .values(confirmed_at=now, last_step=step),
    )
    if not won:
        session.expire(factor)
        raise Conflict("This authenticator app is already set up.", code="already_confirmed")
    session.refresh(factor)
    return factor


def verify_totp(
    session: Session, keys: KeyStore, owner: Owner, code: str, *, now: datetime
) -> Factor | None:
    """The confirmed TOTP factor that `code` belongs to, or None (wrong, malformed, replayed).

    RFC 6238 §5.2: a code is accepted at most once. Its time step must be newer than the
    factor's last accepted step, claimed with a compare-and-set.
    """
    if _totp_code(code) is None:
        return None
    factors = session.scalars(
        select(Factor).where(
            owner.where(Factor), Factor.kind == FactorKind.TOTP, Factor.confirmed_at.is_not(None)
        )
    ).all()
    for factor in factors:
        step = matching_totp_step(_open_secret(keys, owner, factor, now=now), code, now=now)
        if step is None:
            continue
        won = _claimed(
            session,
            update(Factor)
            .where(Factor.id == factor.id, Factor.last_step < step)
            .values(last_step=step, last_used_at=now),
        )
        if won:
            session.refresh(factor)
            return factor
        session.expire(factor)
    return None


# --- WebAuthn (W3C Web Authentication Level 2/3) ---------------------------------------


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _credential_descriptors(session: Session, owner: Owner) -> list[PublicKeyCredentialDescriptor]:
    ids = session.scalars(
        select(Factor.credential_id).where(
            owner.where(Factor),
            Factor.kind == FactorKind.WEBAUTHN,
            Factor.credential_id.is_not(None),
        )
    ).all()
    return [PublicKeyCredentialDescriptor(id=cid) for cid in ids if cid is not None]


def _webauthn_failed() -> InvalidInput:
    # The library's messages stay out of the answer: they help an attacker tune a forgery.
    return InvalidInput("The security key's answer was not accepted.", code=_WEBAUTHN_FAILED)


USER_HANDLE_BYTES: Final = 32


def user_handle_of(session: Session, owner: Owner) -> bytes:
    """The owner's WebAuthn user handle: the one their credentials already carry, else a
    fresh random one (WebAuthn §14.6.1: a user handle holds no personal information)."""
    existing = session.scalar(
        select(Factor.user_handle)
        .where(owner.where(Factor), Factor.user_handle.is_not(None))
        .order_by(Factor.created_at)
        .limit(1)
    )
    return existing if existing is not None else secrets.token_bytes(USER_HANDLE_BYTES)


def registration_options(
    session: Session,
    owner: Owner,
    *,
    user_name: str,
    display_name: str,
    rp_id: str,
    rp_name: str,
    passkey: bool = False,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, str]:
    """Start registering a security key or a passkey: (ceremony token, options JSON).

    A passkey is a discoverable credential that verifies its user (a PIN or biometric):
    resident key and user verification are required, so it can later sign in without a
    username, standing for both factors. A security key is asked for neither.

    The challenge is kept server-side in a single-use SignInChallenge found by the
    token's SHA-256; the owner's existing credentials are excluded (WebAuthn §5.4.3).
    """
    purposes = [ChallengePurpose.WEBAUTHN_REGISTER, ChallengePurpose.PASSKEY_REGISTER]
    session.execute(
        delete(SignInChallenge)
        .where(
            owner.where(SignInChallenge),
            SignInChallenge.purpose.in_([str(p) for p in purposes]),
            SignInChallenge.expires_at < now,
        )
        .execution_options(synchronize_session=False)
    )
    handle = user_handle_of(session, owner)
    if passkey:
        selection = AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
    else:
        selection = AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED,
        )
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_name=user_name,
        user_id=handle,
        user_display_name=display_name,
        timeout=int(ttl.total_seconds() * 1000),
        authenticator_selection=selection,
        exclude_credentials=_credential_descriptors(session, owner),
    )
    token = secrets.token_urlsafe(32)
    session.add(
        SignInChallenge(
            id=uuid7(),
            **owner.columns(),
            token_hash=_token_hash(token),
            purpose=purposes[1] if passkey else purposes[0],
            # A ceremony runs inside a signed-in console session; it opens no session.
            session_kind=SessionKind.COOKIE,
            breached=False,
            created_at=now,
            expires_at=now + ttl,
            attempts=0,
            webauthn_challenge=options.challenge,
            user_handle=handle,
        )
    )
    session.flush()
    return token, options_to_json(options)


def finish_registration(
    session: Session,
    owner: Owner,
    *,
    token: str,
    credential: str | dict[str, Any],
    rp_id: str,
    origin: str,
    label: str | None,
    now: datetime,
) -> Factor:
    """Verify the authenticator's attestation (WebAuthn §7.1) and store the credential.

    The ceremony's challenge is consumed first, atomically, so it serves one answer. A
    passkey ceremony refuses a credential made without user verification. Without a
    label the credential is called "Passkey" or "Security key".
    """
    if label is not None:
        _clean_label(label)  # a bad name is refused before the ceremony is spent
    challenge = session.scalar(
        select(SignInChallenge).where(
            SignInChallenge.token_hash == _token_hash(token),
            SignInChallenge.purpose.in_(
                [ChallengePurpose.WEBAUTHN_REGISTER, ChallengePurpose.PASSKEY_REGISTER]
            ),
            owner.where(SignInChallenge),
        )
    )
    if (
        challenge is None
        or challenge.webauthn_challenge is None
        or challenge.consumed_at is not None
        or challenge.expires_at <= now
    ):
        raise _webauthn_failed()
    expected = challenge.webauthn_challenge
    passkey = challenge.purpose == ChallengePurpose.PASSKEY_REGISTER
    name = _clean_label(label or ("Passkey" if passkey else "Security key"))
    handle = challenge.user_handle
    consumed = _claimed(
        session,
        update(SignInChallenge)
        .where(
            SignInChallenge.id == challenge.id,
            SignInChallenge.consumed_at.is_(None),
            SignInChallenge.expires_at > now,
        )
        .values(consumed_at=now),
    )
    session.expire(challenge)
    if not consumed:
        raise _webauthn_failed()
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=expected,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_verification=passkey,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise _webauthn_failed() from exc
    taken = session.scalar(
        select(Factor.id).where(Factor.credential_id == verified.credential_id).limit(1)
    )
    if taken is not None:
        raise _webauthn_failed()
    factor = Factor(
        id=uuid7(),
        **owner.columns(),
        kind=FactorKind.WEBAUTHN,
        label=name,
        created_at=now,
        confirmed_at=now,
        last_step=-1,
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        user_handle=handle,
    )
    session.add(factor)
    session.flush()
    return factor


def authentication_options(session: Session, owner: Owner, *, rp_id: str) -> tuple[bytes, str]:
    """A WebAuthn assertion request for the owner's credentials: (challenge, options JSON).

    User verification is required (a PIN or biometric on the key). The caller keeps the
    challenge in its own single-use sign-in challenge.
    """
    allowed = _credential_descriptors(session, owner)
    if not allowed:
        raise InvalidInput("No security key is registered.", code="webauthn_not_enrolled")
    options = generate_authentication_options(
        rp_id=rp_id,
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options.challenge, options_to_json(options)


def parse_assertion(credential: str | dict[str, Any]) -> AuthenticationCredential:
    """The browser's assertion JSON, parsed; anything malformed is the one refusal."""
    try:
        return parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise _webauthn_failed() from exc


def handle_matches(factor: Factor, owner: Owner, user_handle: bytes) -> bool:
    """Whether `user_handle` is the one `factor` was registered with (constant time).

    Credentials made before random handles existed carry the owner's id.
    """
    expected = factor.user_handle if factor.user_handle is not None else owner.id.bytes
    return hmac.compare_digest(expected, user_handle)


def verify_assertion(
    session: Session,
    owner: Owner,
    *,
    challenge: bytes,
    credential: str | dict[str, Any],
    rp_id: str,
    origin: str,
    now: datetime,
) -> Factor:
    """Verify an assertion (WebAuthn §7.2) made by one of the owner's credentials."""
    parsed = parse_assertion(credential)
    factor = session.scalar(
        select(Factor).where(
            owner.where(Factor),
            Factor.kind == FactorKind.WEBAUTHN,
            Factor.credential_id == parsed.raw_id,
            Factor.confirmed_at.is_not(None),
        )
    )
    if factor is None:
        raise _webauthn_failed()
    user_handle = parsed.response.user_handle
    if user_handle and not handle_matches(factor, owner, user_handle):
        raise _webauthn_failed()
    return verify_with(
        session, factor, parsed, challenge=challenge, rp_id=rp_id, origin=origin, now=now
    )


def verify_with(
    session: Session,
    factor: Factor,
    parsed: AuthenticationCredential,
    *,
    challenge: bytes,
    rp_id: str,
    origin: str,
    now: datetime,
) -> Factor:
    """Check `parsed` against `factor`'s public key and claim its signature counter.

    The origin and RP ID are checked, so a look-alike site's relay fails (R4); user
    verification is required. The signature counter must grow (§6.1.1): a count at or
    below the stored one means a cloned authenticator, unless both are 0 (passkeys that
    keep no counter, whose challenges the caller makes single-use).
    """
    if factor.public_key is None:
        raise _webauthn_failed()
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=factor.public_key,
            credential_current_sign_count=factor.sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise _webauthn_failed() from exc
    new_count = verified.new_sign_count
    counter_ok = Factor.sign_count == 0 if new_count == 0 else Factor.sign_count < new_count
    won = _claimed(
        session,
        update(Factor)
        .where(Factor.id == factor.id, counter_ok)
        .values(sign_count=new_count, last_used_at=now),
    )
    if not won:
        session.expire(factor)
        raise _webauthn_failed()
    session.refresh(factor)
    return factor


# --- recovery codes --------------------------------------------------------------------


def _normalise_recovery_code(code: str) -> str | None:
    cleaned = code.strip().lower().replace("-", "").replace(" ", "")
    if len(cleaned) != RECOVERY_LENGTH or any(c not in RECOVERY_ALPHABET for c in cleaned):
        return None
    return cleaned


def _recovery_hash(keys: KeyStore, owner: Owner, normalised: str, *, now: datetime) -> bytes:
    # Keyed (HMAC-SHA-256) and bound to the owner: a copy of the table verifies nothing.
    return crypto.keyed_digest(
        keys.service_key(RECOVERY_KEY, now=now), owner.id.bytes + normalised.encode()
    )


def new_recovery_codes(
    session: Session, keys: KeyStore, owner: Owner, *, now: datetime, count: int = 10
) -> list[str]:
    """Issue fresh single-use recovery codes ("xxxxx-xxxxx"); the old ones stop working.

    Only keyed hashes are stored: the codes are shown to the user once.
    """
    session.execute(
        delete(RecoveryCode)
        .where(owner.where(RecoveryCode))
        .execution_options(synchronize_session=False)
    )
    codes: list[str] = []
    half = RECOVERY_LENGTH // 2
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append(f"{raw[:half]}-{raw[half:]}")
        session.add(
            RecoveryCode(
                id=uuid7(),
                **owner.columns(),
                code_hash=_recovery_hash(keys, owner, raw, now=now),
                created_at=now,
            )
        )
    session.flush()
    return codes


def use_recovery_code(
    session: Session, keys: KeyStore, owner: Owner, code: str, *, now: datetime
) -> bool:
    """Burn one of the owner's unused recovery codes; False if wrong, used or another's."""
    normalised = _normalise_recovery_code(code)
    if normalised is None:
        return False
    return _claimed(
        session,
        update(RecoveryCode)
        .where(
            RecoveryCode.code_hash == _recovery_hash(keys, owner, normalised, now=now),
            owner.where(RecoveryCode),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now),
    )


def recovery_codes_left(session: Session, owner: Owner) -> int:
    left = session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(owner.where(RecoveryCode), RecoveryCode.used_at.is_(None))
    )
    return int(left or 0)
