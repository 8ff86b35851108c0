"""A software WebAuthn authenticator and client, so tests need no browser (W3C WebAuthn L2).

It plays both the authenticator (P-256 keys, ES256 signatures, a signature counter,
"none" attestation) and the browser (clientDataJSON with the page's origin), and answers
in the JSON shape `navigator.credentials.create()/get()` results take once serialised,
which py_webauthn parses as is.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40
ES256 = -7


class AuthenticatorRefused(Exception):
    """What a browser would answer with a DOMException (InvalidStateError, NotAllowedError)."""


@dataclass
class SoftCredential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


class SoftAuthenticator:
    """Keeps its credentials and their counters between ceremonies.

    `counter_step=0` imitates passkeys that always report a count of 0;
    `user_verification=False` imitates a key without PIN or biometric.
    """

    def __init__(
        self,
        rp_id: str,
        origin: str,
        *,
        counter_step: int = 1,
        user_verification: bool = True,
    ) -> None:
        self.rp_id = rp_id
        self.origin = origin
        self.counter_step = counter_step
        self.user_verification = user_verification
        self.credentials: dict[bytes, SoftCredential] = {}
        self.last_response: dict[str, Any] | None = None

    def clone(self) -> SoftAuthenticator:
        """A copy with the same private keys and counters: a cloned authenticator."""
        return copy.deepcopy(self)

    # -- registration (navigator.credentials.create) ------------------------------------

    def create(
        self, options_json: str, *, origin: str | None = None, rp_id: str | None = None
    ) -> dict[str, Any]:
        """A new credential for `options`; `origin` and `rp_id` forge the answer as in `get`."""
        options = json.loads(options_json)
        rp = rp_id or options["rp"].get("id", self.rp_id)
        if ES256 not in [p["alg"] for p in options["pubKeyCredParams"]]:
            raise AuthenticatorRefused("NotSupportedError: no ES256")
        for excluded in options.get("excludeCredentials", []):
            if base64url_to_bytes(excluded["id"]) in self.credentials:
                raise AuthenticatorRefused("InvalidStateError: credential already registered")
        cred = SoftCredential(
            id=os.urandom(32),
            key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp,
            user_handle=base64url_to_bytes(options["user"]["id"]),
        )
        self.credentials[cred.id] = cred
        numbers = cred.key.public_key().public_numbers()
        cose_key = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: ES256,  # alg
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        auth_data = (
            self._auth_data(rp, FLAG_AT, cred.sign_count)
            + bytes(16)  # AAGUID
            + struct.pack(">H", len(cred.id))
            + cred.id
            + cose_key
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        response = {
            "id": bytes_to_base64url(cred.id),
            "rawId": bytes_to_base64url(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
        self.last_response = response
        return response

    # -- assertion (navigator.credentials.get) ------------------------------------------

    def get(
        self,
        options_json: str,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """An assertion for `options`; `origin`, `rp_id` and `credential_id` forge one.

        `origin` is the page the browser reports (a look-alike site); `rp_id` the RP ID
        hashed into the authenticator data; `credential_id` answers with a credential the
        request did not allow (a hostile client).
        """
        options = json.loads(options_json)
        requested = options.get("rpId", self.rp_id)
        cred = self._pick(options, requested, credential_id)
        rp = rp_id or requested
        cred.sign_count += self.counter_step
        auth_data = self._auth_data(rp, 0, cred.sign_count)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response = {
            "id": bytes_to_base64url(cred.id),
            "rawId": bytes_to_base64url(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(cred.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
        self.last_response = response
        return response

    def replay(self) -> dict[str, Any]:
        """The last answer again, byte for byte (what an eavesdropper would resend)."""
        assert self.last_response is not None
        return copy.deepcopy(self.last_response)

    # -- internals ------------------------------------------------------------------------

    def _pick(
        self, options: dict[str, Any], rp: str, credential_id: bytes | None
    ) -> SoftCredential:
        if credential_id is not None:
            return self.credentials[credential_id]
        allowed = [base64url_to_bytes(c["id"]) for c in options.get("allowCredentials", [])]
        for cred in self.credentials.values():
            if cred.rp_id == rp and (not allowed or cred.id in allowed):
                return cred
        raise AuthenticatorRefused("NotAllowedError: no matching credential")

    def _auth_data(self, rp: str, extra_flags: int, sign_count: int) -> bytes:
        flags = FLAG_UP | extra_flags | (FLAG_UV if self.user_verification else 0)
        return hashlib.sha256(rp.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()
