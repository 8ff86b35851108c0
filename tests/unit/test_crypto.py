"""Unit tests of vault/crypto.py: sealed fields, wrapped keys and the chunked blob AEAD.

Obligations served: R8 (video is encrypted at rest: a sealed blob opens only under its
key and its owner's id, and any change to it is detected) and S6 (cryptographic erase
needs data encrypted before it is written, under keys of at least 128 bits: here 256-bit
AES-GCM keys, checked against the published GCM test vectors).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tutela.core.errors import IntegrityFailure
from tutela.vault import crypto
from tutela.vault.crypto import (
    KEY_BYTES,
    STREAM_HEADER,
    TAG_BYTES,
    StreamOpener,
    StreamSealer,
    key_fingerprint,
    keyed_digest,
    new_key,
    open_sealed,
    seal,
    sealed_size,
    unwrap_key,
    wrap_key,
)

CHUNK = 16
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
AAD = b"clip:01J9ZQ7V4X"
OTHER_AAD = b"clip:01J9ZQ7V4Y"
KEY = new_key()


def irregular_pieces(data: bytes, seed: int) -> Iterator[bytes]:
    """`data` cut into pieces of 0 to 2.5 chunks, so pieces straddle chunk boundaries."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        size = rng.randint(0, CHUNK * 5 // 2)
        yield data[at : at + size]
        at += size


def seal_blob(
    key: bytes, plaintext: bytes, *, aad: bytes = AAD, mac_key: bytes | None = None
) -> tuple[bytes, StreamSealer]:
    """Seal `plaintext` in 16-byte chunks, fed in irregular pieces; the blob and its sealer."""
    sealer = StreamSealer(key, aad=aad, chunk_size=CHUNK, mac_key=mac_key)
    blob = b"".join(sealer.seal(irregular_pieces(plaintext, seed=len(plaintext))))
    return blob, sealer


def read_all(blob: bytes, *, key: bytes, aad: bytes = AAD, plain_size: int) -> bytes:
    """Open a sealed blob held in memory and decrypt it whole."""
    opener = StreamOpener(key, aad=aad, header=blob[: STREAM_HEADER.size], plain_size=plain_size)
    return b"".join(opener.read(lambda offset, length: blob[offset : offset + length]))


# --- the primitive is the standard one --------------------------------------------------

# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 14 and 16
# (256-bit keys); the same vectors appear in NIST's GCM validation suite.
GCM_VECTORS = {
    "case-14": {
        "key": "00" * 32,
        "iv": "00" * 12,
        "plaintext": "00" * 16,
        "aad": "",
        "ciphertext": "cea7403d4d606b6e074ec5d3baf39d18",
        "tag": "d0d1c8a799996bf0265b98b5d48ab919",
    },
    "case-16": {
        "key": "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "iv": "cafebabefacedbaddecaf888",
        "plaintext": "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "aad": "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "ciphertext": "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "tag": "76fc6ece0f4e1768cddf8853bb2d551b",
    },
}


@pytest.mark.parametrize("case", GCM_VECTORS)
def test_aes_256_gcm_matches_published_vectors(case: str) -> None:
    """The AEAD Tutela uses is standard AES-256-GCM (NIST SP 800-38D)."""
    v = {name: bytes.fromhex(value) for name, value in GCM_VECTORS[case].items()}
    aead = AESGCM(v["key"])
    assert aead.encrypt(v["iv"], v["plaintext"], v["aad"]) == v["ciphertext"] + v["tag"]
    assert aead.decrypt(v["iv"], v["ciphertext"] + v["tag"], v["aad"]) == v["plaintext"]


def test_new_keys_are_256_bit_and_distinct() -> None:
    """Keys are long enough for a cryptographic erase (S6) and never repeat."""
    keys = {new_key() for _ in range(64)}
    assert len(keys) == 64
    assert all(len(k) == KEY_BYTES == 32 for k in keys)


def test_key_fingerprint_is_stable_and_does_not_reveal_the_key() -> None:
    key = new_key()
    assert key_fingerprint(key) == key_fingerprint(key)
    assert key_fingerprint(key) != key_fingerprint(new_key())
    assert key.hex()[:16] not in key_fingerprint(key)


# --- sealed fields and wrapped keys -----------------------------------------------------


@pytest.mark.parametrize(
    "plaintext", [b"", b"Ada", "Zoë's bedroom".encode(), bytes(range(256)) * 40]
)
def test_sealed_field_round_trip(plaintext: bytes) -> None:
    key = new_key()
    sealed = seal(key, plaintext, aad=b"person:1")
    assert len(plaintext) < 8 or plaintext not in sealed
    assert open_sealed(key, sealed, aad=b"person:1") == plaintext


def test_sealing_twice_gives_different_ciphertexts() -> None:
    """A fresh nonce per seal: equal names do not show up as equal ciphertexts."""
    key = new_key()
    assert seal(key, b"Ada", aad=b"person:1") != seal(key, b"Ada", aad=b"person:1")


def test_sealed_field_bound_to_its_owner() -> None:
    """A sealed field copied to another row does not open there."""
    key = new_key()
    sealed = seal(key, b"Ada", aad=b"person:1")
    with pytest.raises(IntegrityFailure):
        open_sealed(key, sealed, aad=b"person:2")


def test_sealed_field_refuses_wrong_key_tampering_and_unknown_format() -> None:
    key = new_key()
    sealed = seal(key, b"Ada Lovelace", aad=b"person:1")
    with pytest.raises(IntegrityFailure):
        open_sealed(new_key(), sealed, aad=b"person:1")
    flipped = bytearray(sealed)
    flipped[-1] ^= 0x01
    with pytest.raises(IntegrityFailure):
        open_sealed(key, bytes(flipped), aad=b"person:1")
    with pytest.raises(IntegrityFailure):
        open_sealed(key, b"\x02" + sealed[1:], aad=b"person:1")
    with pytest.raises(IntegrityFailure):
        open_sealed(key, sealed[:10], aad=b"person:1")


def test_wrapped_key_round_trip() -> None:
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, context=b"household:7")
    assert key not in wrapped
    assert unwrap_key(kek, wrapped, context=b"household:7") == key


def test_wrapped_key_bound_to_its_context() -> None:
    """A wrapped key moved to another household does not unwrap."""
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, context=b"household:7")
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, wrapped, context=b"household:8")


def test_wrapped_key_refuses_other_kek_and_tampering() -> None:
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, context=b"household:7")
    with pytest.raises(IntegrityFailure):
        unwrap_key(new_key(), wrapped, context=b"household:7")
    flipped = bytearray(wrapped)
    flipped[20] ^= 0x80
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, bytes(flipped), context=b"household:7")
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, wrapped[:8], context=b"household:7")


def test_keyed_digest_is_hmac_sha256() -> None:
    """RFC 4231 test case 2."""
    digest = keyed_digest(b"Jefe", b"what do ya want for nothing?")
    assert digest.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


# --- the chunked blob AEAD --------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_stream_round_trip(size: int) -> None:
    plaintext = random.Random(size).randbytes(size)
    blob, sealer = seal_blob(KEY, plaintext)
    assert sealer.plain_size == size
    assert read_all(blob, key=KEY, plain_size=size) == plaintext


@pytest.mark.parametrize("size", [*SIZES, 1000])
def test_sealed_size_matches_output(size: int) -> None:
    blob, _ = seal_blob(KEY, bytes(size))
    assert len(blob) == sealed_size(size, CHUNK)


def test_sealed_size_with_default_chunk() -> None:
    sealer = StreamSealer(KEY, aad=AAD)
    blob = b"".join(sealer.seal([bytes(600_000)]))
    assert len(blob) == sealed_size(600_000)


def test_stream_hides_plaintext_and_uses_fresh_nonces() -> None:
    """Two seals of the same clip share no chunk, and no chunk shows the plaintext."""
    plaintext = b"kitchen camera frame " * 10
    first, _ = seal_blob(KEY, plaintext)
    second, _ = seal_blob(KEY, plaintext)
    assert first != second
    assert b"kitchen" not in first
    body = STREAM_HEADER.size
    assert first[body : body + CHUNK] != second[body : body + CHUNK]


@pytest.mark.parametrize("size", SIZES)
def test_stream_digest_is_hmac_of_plaintext(size: int) -> None:
    """The sealer's digest is HMAC-SHA-256 of the plaintext under the mac key."""
    plaintext = random.Random(size).randbytes(size)
    mac_key = new_key()
    _, sealer = seal_blob(KEY, plaintext, mac_key=mac_key)
    assert sealer.digest == hmac.new(mac_key, plaintext, hashlib.sha256).digest()
    assert sealer.digest == keyed_digest(mac_key, plaintext)


def test_ranged_reads_equal_plaintext_slices() -> None:
    """Any [start, end) range decrypts to exactly that slice (HTTP Range requests)."""
    size = 7 * CHUNK + 3
    plaintext = random.Random(1).randbytes(size)
    blob, _ = seal_blob(KEY, plaintext)
    opener = StreamOpener(KEY, aad=AAD, header=blob[: STREAM_HEADER.size], plain_size=size)
    fetched: list[tuple[int, int]] = []

    def read_at(offset: int, length: int) -> bytes:
        fetched.append((offset, length))
        return blob[offset : offset + length]

    rng = random.Random(2)
    ranges = [(0, size), (0, 1), (size - 1, size), (CHUNK, 2 * CHUNK), (5, size + 40)]
    for _ in range(300):
        low, high = sorted(rng.sample(range(size + 1), 2))
        ranges.append((low, high))
    for start, end in ranges:
        fetched.clear()
        assert b"".join(opener.read(read_at, start, end)) == plaintext[start:end]
        # Only the chunks that hold the range are fetched: memory and traffic stay small.
        first, final = start // CHUNK, (min(end, size) - 1) // CHUNK
        spans = [opener.chunk_span(i) for i in range(first, final + 1)]
        assert sum(length for _, length in fetched) == sum(length for _, length in spans)
        assert fetched[0][0] == spans[0][0]
    assert b"".join(opener.read(read_at, 10, 10)) == b""


def test_whole_reads_fetch_many_chunks_at_once_within_the_read_size() -> None:
    """An object store answers a few large ranged reads, each at most `read_bytes`."""
    size = 40 * CHUNK + 7
    plaintext = random.Random(3).randbytes(size)
    blob, _ = seal_blob(KEY, plaintext)
    opener = StreamOpener(KEY, aad=AAD, header=blob[: STREAM_HEADER.size], plain_size=size)
    fetched: list[int] = []

    def read_at(offset: int, length: int) -> bytes:
        fetched.append(length)
        return blob[offset : offset + length]

    read_bytes = 8 * (CHUNK + 16)
    assert b"".join(opener.read(read_at, read_bytes=read_bytes)) == plaintext
    assert len(fetched) == 6  # 41 chunks, 8 per read
    assert max(fetched) <= read_bytes


def test_stream_bound_to_its_owner() -> None:
    """A clip's ciphertext re-attached to another clip's id does not open."""
    plaintext = b"x" * (2 * CHUNK + 1)
    blob, _ = seal_blob(KEY, plaintext, aad=AAD)
    with pytest.raises(IntegrityFailure):
        read_all(blob, key=KEY, aad=OTHER_AAD, plain_size=len(plaintext))


@pytest.mark.parametrize("size", [0, 5, 3 * CHUNK + 5])
def test_stream_refuses_wrong_key(size: int) -> None:
    blob, _ = seal_blob(KEY, bytes(size))
    with pytest.raises(IntegrityFailure):
        read_all(blob, key=new_key(), plain_size=size)


def chunk_offsets(size: int) -> list[int]:
    """Start of each sealed chunk within a blob of `size` plaintext bytes."""
    count = max(1, -(-size // CHUNK))
    return [STREAM_HEADER.size + i * (CHUNK + TAG_BYTES) for i in range(count)]


SIZE = 3 * CHUNK + 5


@pytest.mark.parametrize("position", [0, 5, STREAM_HEADER.size, STREAM_HEADER.size + 40, -1])
def test_stream_detects_one_flipped_byte(position: int) -> None:
    """A flipped byte anywhere (header, a chunk, a tag) fails the whole read."""
    blob, _ = seal_blob(KEY, bytes(SIZE))
    tampered = bytearray(blob)
    tampered[position] ^= 0x01
    with pytest.raises(IntegrityFailure):
        read_all(bytes(tampered), key=KEY, plain_size=SIZE)


def test_stream_detects_swapped_chunks() -> None:
    blob, _ = seal_blob(KEY, random.Random(3).randbytes(SIZE))
    first, second, _, _ = chunk_offsets(SIZE)
    step = CHUNK + TAG_BYTES
    swapped = blob[:first] + blob[second : second + step] + blob[first : first + step]
    swapped += blob[second + step :]
    assert len(swapped) == len(blob)
    with pytest.raises(IntegrityFailure):
        read_all(swapped, key=KEY, plain_size=SIZE)


def test_stream_detects_truncated_last_chunk() -> None:
    blob, _ = seal_blob(KEY, bytes(SIZE))
    with pytest.raises(IntegrityFailure):
        read_all(blob[:-3], key=KEY, plain_size=SIZE)
    # Also when the reader believes the shorter size (a truncated blob and a lying row).
    with pytest.raises(IntegrityFailure):
        read_all(blob[:-3], key=KEY, plain_size=SIZE - 3)


def test_stream_detects_dropped_final_chunk() -> None:
    """Cutting a blob at a chunk boundary is caught by the last-chunk flag."""
    blob, _ = seal_blob(KEY, bytes(SIZE))
    last = chunk_offsets(SIZE)[-1]
    dropped = blob[:last]
    with pytest.raises(IntegrityFailure):
        read_all(dropped, key=KEY, plain_size=SIZE)
    with pytest.raises(IntegrityFailure):
        read_all(dropped, key=KEY, plain_size=3 * CHUNK)


def test_stream_detects_swapped_header_from_another_blob() -> None:
    blob, _ = seal_blob(KEY, bytes(SIZE))
    other, _ = seal_blob(KEY, bytes(SIZE))
    spliced = other[: STREAM_HEADER.size] + blob[STREAM_HEADER.size :]
    with pytest.raises(IntegrityFailure):
        read_all(spliced, key=KEY, plain_size=SIZE)


def test_empty_stream_still_authenticated() -> None:
    """An empty clip has one sealed chunk; removing it is detected."""
    blob, _ = seal_blob(KEY, b"")
    assert read_all(blob, key=KEY, plain_size=0) == b""
    with pytest.raises(IntegrityFailure):
        read_all(blob[: STREAM_HEADER.size], key=KEY, plain_size=0)


def test_stream_rejects_bad_header() -> None:
    blob, _ = seal_blob(KEY, bytes(5))
    with pytest.raises(IntegrityFailure):
        StreamOpener(KEY, aad=AAD, header=blob[:5], plain_size=5)
    with pytest.raises(IntegrityFailure):
        StreamOpener(KEY, aad=AAD, header=b"XXXX" + blob[4 : STREAM_HEADER.size], plain_size=5)


@pytest.mark.parametrize("chunk_size", [0, -1, 64 * 1024 * 1024 + 1])
def test_sealer_rejects_chunk_size_out_of_range(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        StreamSealer(KEY, aad=AAD, chunk_size=chunk_size)


def test_a_key_wrapper_reads_and_writes_what_wrap_key_does() -> None:
    kek, key = crypto.new_key(), crypto.new_key()
    wrapper = crypto.KeyWrapper(kek)
    assert crypto.unwrap_key(kek, wrapper.wrap(key, context=b"a"), context=b"a") == key
    assert wrapper.unwrap(crypto.wrap_key(kek, key, context=b"a"), context=b"a") == key
    with pytest.raises(IntegrityFailure):
        wrapper.unwrap(wrapper.wrap(key, context=b"a"), context=b"b")
    with pytest.raises(IntegrityFailure):
        crypto.KeyWrapper(crypto.new_key()).unwrap(wrapper.wrap(key, context=b"a"), context=b"a")
