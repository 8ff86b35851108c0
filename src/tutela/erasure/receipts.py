"""Signed erasure receipts: proof, checkable by anyone with the public key, of what was erased.

A receipt is the record that deleted data stays deleted (S8) and the evidence that nothing
is called deleted before its deletion was verified (A8): the erasure engine writes the
body (counts, steps, the remnant check) and this module signs it with Ed25519 (RFC 8032).

The signature covers the canonical JSON form of ``{"tutela_receipt": 1, "receipt": body}``,
never the bare body, so a Tutela signature over anything else can never pass for a
receipt (domain separation). The canonical form is JSON with sorted keys, no spaces and
UTF-8 text; floats are refused because their text form is not unique across encoders.

The private key is the 32-byte service key ``erasure-receipts`` of the key store, used as
the Ed25519 seed: it is wrapped by the master key like every other key, and it survives a
master-key rotation, so receipts issued before a rotation still verify after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from tutela.core.errors import TutelaError
from tutela.vault.keystore import KeyStore

RECEIPT_KEY_NAME: Final = "erasure-receipts"
RECEIPT_VERSION: Final = 1
ALGORITHM: Final = "Ed25519"

_SIGNATURE_BYTES: Final = 64
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_DOCUMENT_FIELDS: Final = frozenset({"receipt", "signature"})
_SIGNATURE_FIELDS: Final = frozenset({"alg", "key_id", "value"})


class ReceiptInvalid(TutelaError):
    """A receipt, or the public key offered to check it, did not pass; `code` says why.

    ``receipt_malformed``: not JSON or not a receipt document. ``receipt_wrong_key``:
    signed by another key than the one given. ``receipt_invalid``: the signature does not
    match the body (a changed byte) or uses another algorithm. ``public_key_invalid``: the
    key offered is not an Ed25519 public key in PEM.
    """

    status = 422
    code = "receipt_invalid"
    title = "Receipt not valid"


def signing_key(keys: KeyStore, *, now: datetime) -> Ed25519PrivateKey:
    """The service's receipt-signing key, made on first use (its seed is a service key)."""
    return Ed25519PrivateKey.from_private_bytes(keys.service_key(RECEIPT_KEY_NAME, now=now))


def public_key_pem(keys: KeyStore, *, now: datetime) -> str:
    """The public key that verifies the service's receipts, as a SubjectPublicKeyInfo PEM."""
    return _pem(signing_key(keys, now=now).public_key())


def key_id(public_key: Ed25519PublicKey) -> str:
    """A receipt key's public name: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical(body: Mapping[str, Any]) -> bytes:
    """The one byte form of `body` that is signed: sorted keys, no spaces, UTF-8.

    Raises ValueError for floats (NaN and infinities included) and for keys that are not
    strings, whose JSON text would not be unique; TypeError for values JSON cannot hold.
    """
    _refuse_ambiguous(body)
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign(private_key: Ed25519PrivateKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """A receipt document: the body and an Ed25519 signature over its signed form (A8, S8)."""
    signature = private_key.sign(_signed_bytes(body))
    return {
        "receipt": _plain(body),
        "signature": {
            "alg": ALGORITHM,
            "key_id": key_id(private_key.public_key()),
            "value": _b64url(signature),
        },
    }


def sign_receipt(keys: KeyStore, body: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """Sign `body` with the service's receipt key."""
    return sign(signing_key(keys, now=now), body)


def verify(
    document: Mapping[str, Any] | str | bytes, public_key: Ed25519PublicKey
) -> dict[str, Any]:
    """The receipt body, once its signature is checked against `public_key`.

    Raises ReceiptInvalid rather than returning a flag: a caller cannot forget to look.
    Unknown fields outside the body are refused too, since nothing vouches for them, and
    so are JSON objects with a repeated key, which other parsers may read differently.
    """
    parsed = _parse(document) if isinstance(document, str | bytes) else document
    if not isinstance(parsed, Mapping) or set(parsed) != _DOCUMENT_FIELDS:
        raise ReceiptInvalid(
            "The document is not a receipt: it needs exactly 'receipt' and 'signature'.",
            code="receipt_malformed",
        )
    body, signature = parsed["receipt"], parsed["signature"]
    if not isinstance(body, Mapping):
        raise ReceiptInvalid("The receipt body is not a JSON object.", code="receipt_malformed")
    if (
        not isinstance(signature, Mapping)
        or set(signature) != _SIGNATURE_FIELDS
        or not all(isinstance(signature[field], str) for field in _SIGNATURE_FIELDS)
    ):
        raise ReceiptInvalid(
            "The receipt's signature needs exactly 'alg', 'key_id' and 'value', as text.",
            code="receipt_malformed",
        )
    if signature["alg"] != ALGORITHM:
        raise ReceiptInvalid(f"The receipt is not signed with {ALGORITHM}.", code="receipt_invalid")
    if not hmac.compare_digest(signature["key_id"].encode(), key_id(public_key).encode()):
        raise ReceiptInvalid(
            "The receipt was signed with another key than the one given.",
            code="receipt_wrong_key",
        )
    raw_signature = _b64url_decode(signature["value"])
    try:
        signed = _signed_bytes(body)
    except (TypeError, ValueError) as exc:
        raise ReceiptInvalid(
            "The receipt body holds values a receipt cannot hold.", code="receipt_malformed"
        ) from exc
    try:
        public_key.verify(raw_signature, signed)
    except InvalidSignature:
        raise ReceiptInvalid(
            "The signature does not match the receipt: it was altered after signing.",
            code="receipt_invalid",
        ) from None
    return _plain(body)


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ReceiptInvalid(code="public_key_invalid") otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise ReceiptInvalid(
            "The public key is not an Ed25519 public key in PEM form.", code="public_key_invalid"
        )
    return key


def _pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _signed_bytes(body: Mapping[str, Any]) -> bytes:
    return canonical({"tutela_receipt": RECEIPT_VERSION, "receipt": body})


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `body` in plain JSON types, exactly what was signed."""
    copy: dict[str, Any] = json.loads(canonical(body))
    return copy


def _refuse_ambiguous(value: object) -> None:
    if isinstance(value, float):
        raise ValueError("receipts hold no floats: their JSON text is not unique")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("receipt keys must be strings")
            _refuse_ambiguous(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_ambiguous(item)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: one text per signature, so none can be re-spelt."""
    malformed = ReceiptInvalid(
        "The receipt's signature is not base64url of an Ed25519 signature.",
        code="receipt_malformed",
    )
    if not _BASE64URL.fullmatch(text):
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise malformed from None
    if len(raw) != _SIGNATURE_BYTES or _b64url(raw) != text:
        raise malformed
    return raw


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a JSON object repeats a key")
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a receipt")


def _parse(document: str | bytes) -> Any:
    try:
        return json.loads(document, object_pairs_hook=_object, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise ReceiptInvalid("The receipt is not valid JSON.", code="receipt_malformed") from None
