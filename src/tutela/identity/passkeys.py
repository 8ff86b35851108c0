"""Usernameless sign-in with a passkey (W3C WebAuthn L2 §5.1.4, discoverable credentials).

A passkey is a discoverable credential whose authenticator verified its user (a PIN or
a biometric). Its assertion proves possession of a device-bound key and the user's
presence on that device, for our RP ID and origin only: phishing-resistant (R4), and
both factors at once (NIST SP 800-63B §5.1.7: a multi-factor cryptographic device). So
a passkey sign-in opens a full session, with no password and no second step, but only
when the authenticator reports user verification; without it the assertion is refused.

The ceremony: `passkey_options` stores a fresh challenge in `passkey_ceremonies` and
answers options with an empty `allowCredentials`, so the browser offers whichever
passkey the person holds. `passkey_sign_in` reads the challenge the browser signed into
clientDataJSON, claims its row with one conditional UPDATE (single-use, across
processes: passkeys often keep a signature counter of 0, so the counter cannot catch a
replay), then finds the credential by its id and checks that its user handle is the one
registered with it. Unknown credential, wrong handle, bad signature, wrong origin or RP
ID, missing user verification and a counter that went back all get the same answer.

Every refusal counts in the throttle (S2, S4) under the source and a key made from the
credential id; the owner's known device is not slowed by its network's failures; a
success clears the account's count like any complete sign-in.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from webauthn import generate_authentication_options, options_to_json
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.structs import AuthenticationCredential, UserVerificationRequirement

from tutela.audit.service import AuditTag, record
from tutela.core.errors import InvalidCredentials, InvalidInput, NotAuthenticated
from tutela.core.ids import uuid7
from tutela.households.models import Profile, ProfileState
from tutela.identity import factors
from tutela.identity.logins import Client, GateCore, Guess, Login, SignInOutcome
from tutela.identity.models import (
    Factor,
    FactorKind,
    KnownDevice,
    PasskeyAudience,
    PasskeyCeremony,
    SessionKind,
)
from tutela.identity.owners import owner_of_row
from tutela.identity.throttle import Attempt

PASSKEY_INVALID = "passkey_invalid"
PASSKEY_CHALLENGE_EXPIRED = "passkey_challenge_expired"
# The throttle's account key for an answer that names no credential at all.
_NO_CREDENTIAL = "pk:none"


def passkey_refused() -> InvalidCredentials:
    """The one answer for every assertion that does not verify (no oracle for forgers)."""
    return InvalidCredentials("This passkey was not accepted.", code=PASSKEY_INVALID)


def ceremony_expired() -> NotAuthenticated:
    return NotAuthenticated(
        "This passkey sign-in has expired; start again.", code=PASSKEY_CHALLENGE_EXPIRED
    )


def _signed_challenge(parsed: AuthenticationCredential) -> bytes | None:
    """The challenge the browser put in clientDataJSON, or None if there is none."""
    try:
        client_data = json.loads(parsed.response.client_data_json)
        challenge = client_data["challenge"]
        if not isinstance(challenge, str) or not 16 <= len(challenge) <= 128:
            return None
        return base64url_to_bytes(challenge)
    except (ValueError, TypeError, KeyError):
        return None


class PasskeySignIn(GateCore):
    """Usernameless passkey sign-in for customers and employees."""

    def passkey_options(self, session: Session, *, audience: PasskeyAudience, now: datetime) -> str:
        """Options for `navigator.credentials.get()`: a fresh challenge, no credential list.

        Asking costs no secret and names no account; expired ceremonies are deleted here,
        so the table holds at most one challenge TTL's worth of requests (an expired or
        unknown challenge gets the same answer).
        """
        ttl = timedelta(minutes=self.settings.challenge_ttl_minutes)
        session.execute(
            delete(PasskeyCeremony)
            .where(PasskeyCeremony.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
        options = generate_authentication_options(
            rp_id=self.settings.rp_id,
            allow_credentials=[],
            user_verification=UserVerificationRequirement.REQUIRED,
            timeout=int(ttl.total_seconds() * 1000),
        )
        session.add(
            PasskeyCeremony(
                id=uuid7(),
                challenge=options.challenge,
                kind=audience,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        session.commit()
        return options_to_json(options)

    def passkey_sign_in(
        self,
        session: Session,
        *,
        assertion: dict[str, Any] | str,
        audience: PasskeyAudience,
        kind: SessionKind,
        client: Client,
        now: datetime,
    ) -> SignInOutcome:
        """Verify a usernameless assertion and open a full session for its owner."""
        try:
            parsed: AuthenticationCredential | None = factors.parse_assertion(assertion)
        except InvalidInput:
            parsed = None
        login, factor = (
            (None, None) if parsed is None else self._passkey_owner(session, parsed, audience)
        )
        # The holder's own device (its cookie from an earlier complete sign-in of the
        # credential's owner) is not slowed by failures from its network, as with passwords.
        known = self._known_device(session, login, client.device_token, now)
        attempt = self._passkey_attempt(parsed, client, known_device=known is not None)
        guess = self._begin(attempt, now)  # check and reserve in one step, or 429
        try:
            return self._passkey_step(
                session,
                guess,
                parsed=parsed,
                login=login,
                factor=factor,
                known=known,
                audience=audience,
                kind=kind,
                client=client,
                now=now,
            )
        finally:
            guess.release()  # an attempt that raised before its verdict counts nothing

    def _passkey_step(
        self,
        session: Session,
        guess: Guess,
        *,
        parsed: AuthenticationCredential | None,
        login: Login | None,
        factor: Factor | None,
        known: KnownDevice | None,
        audience: PasskeyAudience,
        kind: SessionKind,
        client: Client,
        now: datetime,
    ) -> SignInOutcome:
        if parsed is None:
            raise self._passkey_failed(session, guess, now, refusal=passkey_refused())
        challenge = _signed_challenge(parsed)
        if challenge is None or not self._claim_ceremony(session, challenge, audience, now):
            raise self._passkey_failed(session, guess, now, refusal=ceremony_expired())
        if login is None or factor is None:
            raise self._passkey_failed(session, guess, now, refusal=passkey_refused())
        try:
            factors.verify_with(
                session,
                factor,
                parsed,
                challenge=challenge,
                rp_id=self.settings.rp_id,
                origin=self.settings.origin,
                now=now,
            )
        except InvalidInput:
            session.rollback()
            raise self._passkey_failed(
                session, guess, now, refusal=passkey_refused(), login=login
            ) from None
        if guess.succeed():
            self._defended_alert(session, now=now)
        outcome = self._complete(
            session,
            login,
            # The account's consecutive failures end with this complete sign-in (S2).
            attempt=Attempt(
                account=self._account_for_owner(session, login, now), source=client.address
            ),
            known=known,
            kind=kind,
            client=client,
            stage=self.stage_for(session, login, breached=False),
            stepped_up=True,
            now=now,
        )
        session.commit()
        return outcome

    # -- the ceremony and the credential ------------------------------------------------

    def _claim_ceremony(
        self, session: Session, challenge: bytes, audience: PasskeyAudience, now: datetime
    ) -> bool:
        """Mark the ceremony used; True for the one request that did. Committed at once,
        so a later refusal cannot give the challenge back."""
        result = session.execute(
            update(PasskeyCeremony)
            .where(
                PasskeyCeremony.challenge == challenge,
                PasskeyCeremony.kind == audience,
                PasskeyCeremony.used_at.is_(None),
                PasskeyCeremony.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return int(getattr(result, "rowcount", 0) or 0) == 1

    def _passkey_owner(
        self, session: Session, parsed: AuthenticationCredential, audience: PasskeyAudience
    ) -> tuple[Login | None, Factor | None]:
        """The login and factor the assertion names by credential id and user handle."""
        handle = parsed.response.user_handle
        if not handle:
            return None, None  # not a discoverable credential: nothing names its owner
        factor = session.scalar(
            select(Factor).where(
                Factor.credential_id == parsed.raw_id,
                Factor.kind == FactorKind.WEBAUTHN,
                Factor.confirmed_at.is_not(None),
            )
        )
        if factor is None or (factor.staff_id is not None) != (audience == PasskeyAudience.STAFF):
            return None, None
        try:
            owner = owner_of_row(session, factor)
            login = self.login_of(session, owner)
        except (LookupError, NotAuthenticated):
            return None, None  # the account is gone or the employee disabled
        if not factors.handle_matches(factor, owner, handle):
            return None, None
        if login.staff is None:
            profile = session.get(Profile, (owner.household_id, owner.profile_id))
            if profile is None or profile.state != ProfileState.ACTIVE:
                return None, None  # being erased (C10): signs in no more
        return login, factor

    # -- the throttle: every call it gets from a passkey sign-in is here ------------------

    def _passkey_attempt(
        self, parsed: AuthenticationCredential | None, client: Client, *, known_device: bool
    ) -> Attempt:
        # Keyed by credential id: the account is not proven until the signature is.
        key = _NO_CREDENTIAL
        if parsed is not None:
            key = "pk:" + hashlib.sha256(parsed.raw_id).hexdigest()[:40]
        return Attempt(account=key, source=client.address, known_device=known_device)

    def _passkey_failed(
        self,
        session: Session,
        guess: Guess,
        now: datetime,
        *,
        refusal: NotAuthenticated,
        login: Login | None = None,
    ) -> NotAuthenticated:
        entered = guess.fail()
        record(
            session,
            tag=AuditTag.ACCOUNT_LOGIN_FAILURE,
            actor=login.owner.ref if login else "anonymous",
            now=now,
            household_id=login.owner.household_id if login else None,
        )
        if entered:
            self._defended_alert(session, now=now)
            refusal.notices_queued = True
        session.commit()
        return refusal
