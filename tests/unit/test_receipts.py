"""Signed erasure receipts: any change to a signed receipt is caught (A8, S8). No I/O."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tutela.erasure.receipts import (
    RECEIPT_VERSION,
    ReceiptInvalid,
    canonical,
    key_id,
    load_public_key,
    sign,
    verify,
)

SEED = bytes(range(32))


def receipt_body() -> dict[str, Any]:
    return {
        "request_id": "0193f2a4-7c1e-7b3a-9d2e-5f1a2b3c4d5e",
        "scope": {
            "kind": "profile",
            "subject": "sha256:3f0a9c1be2d4a8f7c6b5e4d3c2b1a09f8e7d6c5b4a3928171605f4e3d2c1b0a9",
        },
        "counts": {"voice": 3, "transcript": 2, "location": 0},
        "steps": {
            "mark": "2026-01-01T12:00:00+00:00",
            "destroy_keys": "2026-01-01T12:00:01+00:00",
            "delete_blobs": "2026-01-01T12:00:02+00:00",
            "verify": "2026-01-01T12:00:03+00:00",
        },
        "remnant_check": {
            "result": "clean",
            "stores": [
                {"store": "main", "rows": 0},
                {"store": "keys", "rows": 0},
                {"store": "blobs", "objects": 0},
            ],
        },
        "requested_at": "2026-01-01T11:59:00+00:00",
        "completed_at": "2026-01-01T12:00:03+00:00",
    }


@pytest.fixture
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


@pytest.fixture
def signed(private_key: Ed25519PrivateKey) -> dict[str, Any]:
    return sign(private_key, receipt_body())


def refused(document: object, private_key: Ed25519PrivateKey) -> str:
    with pytest.raises(ReceiptInvalid) as caught:
        verify(document, private_key.public_key())  # type: ignore[arg-type]
    assert caught.value.status == 422
    assert caught.value.title == "Receipt not valid"
    return caught.value.code


def test_a_signed_receipt_verifies_and_gives_back_its_body(
    signed: dict[str, Any], private_key: Ed25519PrivateKey
) -> None:
    public = private_key.public_key()
    assert verify(signed, public) == receipt_body()
    text = json.dumps(signed, indent=2)
    assert verify(text, public) == receipt_body()
    assert verify(text.encode(), public) == receipt_body()


def test_the_document_names_the_algorithm_and_the_key(
    signed: dict[str, Any], private_key: Ed25519PrivateKey
) -> None:
    assert set(signed) == {"receipt", "signature"}
    assert signed["receipt"] == receipt_body()
    signature = signed["signature"]
    assert signature["alg"] == "Ed25519"
    assert signature["key_id"] == key_id(private_key.public_key())
    assert len(signature["key_id"]) == 16
    assert len(signature["value"]) == 86  # 64 bytes, base64url without padding
    assert "=" not in signature["value"]


def test_signing_is_deterministic_and_pinned(signed: dict[str, Any]) -> None:
    """The signed form must never drift: old receipts have to keep verifying."""
    assert signed["signature"] == {
        "alg": "Ed25519",
        "key_id": "56475aa75463474c",
        "value": "dLJdKNvDHGJjc-k27RAxs4cjJriKLlABDMB6N5Cg5l03RQlEp6ZZxXp7E4mZ-RFqfKgCUCLO5V9STD8fxWVuBA",
    }


def test_the_seed_is_used_as_an_rfc_8032_private_key() -> None:
    """RFC 8032 section 7.1, TEST 1: the published secret key gives the published public key."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        del body[key]

    return change


CHANGES = {
    "a count": _set(("counts", "voice"), 2),
    "a count to zero": _set(("counts", "transcript"), 0),
    "a step's timestamp": _set(("steps", "delete_blobs"), "2026-01-01T12:00:09+00:00"),
    "the completion time": _set(("completed_at",), "2026-01-01T12:00:04+00:00"),
    "the request time": _set(("requested_at",), "2026-01-02T11:59:00+00:00"),
    "the scope kind": _set(("scope", "kind"), "household"),
    "the scope subject": _set(("scope", "subject"), "sha256:" + "0" * 64),
    "the request id": _set(("request_id",), "0193f2a4-7c1e-7b3a-9d2e-5f1a2b3c4d5f"),
    "the remnant result": _set(("remnant_check", "result"), "remnants"),
    "a store in the remnant check": _set(("remnant_check", "stores", 2, "objects"), 1),
    "a count's type": _set(("counts", "voice"), "3"),
    "an added field": _set(("note",), "hello"),
    "a removed field": _drop("steps"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_to_the_body_is_refused(
    signed: dict[str, Any],
    private_key: Ed25519PrivateKey,
    change: Callable[[dict[str, Any]], None],
) -> None:
    tampered = copy.deepcopy(signed)
    change(tampered["receipt"])
    assert refused(tampered, private_key) == "receipt_invalid"
    assert refused(json.dumps(tampered), private_key) == "receipt_invalid"


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_a_flipped_signature_byte_is_refused(
    signed: dict[str, Any], private_key: Ed25519PrivateKey, index: int
) -> None:
    raw = bytearray(base64.urlsafe_b64decode(signed["signature"]["value"] + "=="))
    raw[index] ^= 0x01
    signed["signature"]["value"] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert refused(signed, private_key) == "receipt_invalid"


def test_a_receipt_checked_with_another_key_is_refused_as_wrong_key(
    signed: dict[str, Any],
) -> None:
    other = Ed25519PrivateKey.generate()
    assert refused(signed, other) == "receipt_wrong_key"


def test_a_key_id_relabelled_to_another_key_still_fails_the_signature(
    signed: dict[str, Any],
) -> None:
    other = Ed25519PrivateKey.generate()
    signed["signature"]["key_id"] = key_id(other.public_key())
    assert refused(signed, other) == "receipt_invalid"


def test_a_signature_over_the_bare_body_is_not_a_receipt(
    signed: dict[str, Any], private_key: Ed25519PrivateKey
) -> None:
    """Domain separation: the key's signature over anything but the receipt form fails."""
    bare = private_key.sign(canonical(receipt_body()))
    signed["signature"]["value"] = base64.urlsafe_b64encode(bare).rstrip(b"=").decode()
    assert refused(signed, private_key) == "receipt_invalid"


def test_another_algorithm_is_refused(
    signed: dict[str, Any], private_key: Ed25519PrivateKey
) -> None:
    signed["signature"]["alg"] = "none"
    assert refused(signed, private_key) == "receipt_invalid"


MALFORMED = {
    "not JSON": lambda doc: json.dumps(doc)[:-1],
    "not UTF-8": lambda doc: b"\xff\xfe" + json.dumps(doc).encode(),
    "empty": lambda doc: "",
    "a JSON list": lambda doc: json.dumps([doc]),
    "a JSON string": lambda doc: json.dumps("receipt"),
    "no signature": lambda doc: {"receipt": doc["receipt"]},
    "no body": lambda doc: {"signature": doc["signature"]},
    "an unsigned extra field": lambda doc: {**doc, "verified": True},
    "a body that is a list": lambda doc: {**doc, "receipt": [doc["receipt"]]},
    "a signature that is text": lambda doc: {**doc, "signature": doc["signature"]["value"]},
    "no signature value": lambda doc: {
        **doc,
        "signature": {k: v for k, v in doc["signature"].items() if k != "value"},
    },
    "a numeric signature value": lambda doc: {
        **doc,
        "signature": {**doc["signature"], "value": 12},
    },
    "padding in the signature": lambda doc: {
        **doc,
        "signature": {**doc["signature"], "value": doc["signature"]["value"] + "=="},
    },
    "standard base64 alphabet": lambda doc: {
        **doc,
        "signature": {**doc["signature"], "value": "+/" + doc["signature"]["value"][2:]},
    },
    "a short signature": lambda doc: {
        **doc,
        "signature": {**doc["signature"], "value": doc["signature"]["value"][:43]},
    },
    "a float in the body": lambda doc: {**doc, "receipt": {**doc["receipt"], "ratio": 0.5}},
    "NaN in the body": lambda doc: json.dumps(doc)[:-1] + ',"x":NaN}',
    "a repeated key": lambda doc: (
        json.dumps(doc)[:-1] + ',"receipt":' + json.dumps({**doc["receipt"], "counts": {}}) + "}"
    ),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_document_is_refused_as_malformed(
    signed: dict[str, Any], private_key: Ed25519PrivateKey, make: Callable[[Any], Any]
) -> None:
    assert refused(make(signed), private_key) == "receipt_malformed"


def test_a_re_spelt_signature_with_the_same_bytes_is_refused(
    signed: dict[str, Any], private_key: Ed25519PrivateKey
) -> None:
    """The last base64 character carries 2 spare bits: only one spelling is accepted."""
    value = signed["signature"]["value"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(value[-1])
    signed["signature"]["value"] = value[:-1] + alphabet[last | 0b0001]
    if signed["signature"]["value"] == value:
        signed["signature"]["value"] = value[:-1] + alphabet[last & ~0b0001]
    assert refused(signed, private_key) == "receipt_malformed"


def test_verify_returns_a_copy(signed: dict[str, Any], private_key: Ed25519PrivateKey) -> None:
    body = verify(signed, private_key.public_key())
    body["counts"]["voice"] = 99
    assert signed["receipt"]["counts"]["voice"] == 3
    assert verify(signed, private_key.public_key()) == receipt_body()


def test_the_canonical_form_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": {"d": [1, "é"], "c": None}, "e": True}) == (
        '{"a":{"c":null,"d":[1,"é"]},"b":1,"e":true}'.encode()
    )
    assert canonical({"x": 1, "y": 2}) == canonical({"y": 2, "x": 1})


@pytest.mark.parametrize(
    "body",
    [{"ratio": 0.5}, {"n": float("nan")}, {"n": [float("inf")]}, {"nested": {"x": 1.0}}, {1: "a"}],
    ids=["float", "nan", "infinity in a list", "nested float", "integer key"],
)
def test_the_canonical_form_refuses_ambiguous_values(body: dict[Any, Any]) -> None:
    with pytest.raises(ValueError, match=r"floats|strings"):
        canonical(body)


def test_signing_a_body_with_a_float_is_refused(private_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="floats"):
        sign(private_key, {**receipt_body(), "ratio": 0.5})


def test_the_signed_form_is_domain_separated(private_key: Ed25519PrivateKey) -> None:
    body = receipt_body()
    document = sign(private_key, body)
    signature = base64.urlsafe_b64decode(document["signature"]["value"] + "==")
    private_key.public_key().verify(
        signature, canonical({"tutela_receipt": RECEIPT_VERSION, "receipt": body})
    )


def test_a_public_key_round_trips_through_pem(private_key: Ed25519PrivateKey) -> None:
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    loaded = load_public_key(pem)
    assert key_id(loaded) == key_id(private_key.public_key())
    assert key_id(load_public_key(pem.encode())) == key_id(loaded)


def _ec_public_pem() -> bytes:
    return (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _private_pem() -> bytes:
    return Ed25519PrivateKey.from_private_bytes(SEED).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        _ec_public_pem(),
        _private_pem(),
    ],
    ids=["empty", "text", "truncated", "an EC key", "a private key"],
)
def test_a_public_key_that_is_not_ed25519_is_refused(pem: str | bytes) -> None:
    with pytest.raises(ReceiptInvalid) as caught:
        load_public_key(pem)
    assert caught.value.code == "public_key_invalid"
    assert "PRIVATE" not in caught.value.detail
