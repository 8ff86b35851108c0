"""All of Tutela's cryptography: key wrapping, sealed fields and the chunked blob AEAD.

AES-256-GCM throughout (NIST SP 800-38D), 256-bit keys, so that destroying a key is a
cryptographic erase in the sense of NIST SP 800-88 (S6): everything is encrypted before
it is written, and every ciphertext is bound to its owner's id as associated data, so a
ciphertext moved to another row does not decrypt.

Blobs use a STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, 2015): the
plaintext is cut into fixed-size chunks, each sealed with a nonce made of a per-blob
random prefix, the chunk's index and a last-chunk flag. Memory stays at one chunk
whatever the blob's size, any chunk can be decrypted alone (HTTP Range), and chunks
cannot be reordered, dropped or truncated without detection.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tutela.core.errors import IntegrityFailure

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SEALED_VERSION: Final = b"\x01"

STREAM_MAGIC: Final = b"TVS1"
STREAM_PREFIX_BYTES: Final = 7
STREAM_HEADER = struct.Struct(">4sI7s")  # magic, chunk size, nonce prefix
DEFAULT_CHUNK: Final = 256 * 1024
MAX_CHUNK: Final = 64 * 1024 * 1024


def new_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def key_fingerprint(key: bytes) -> str:
    """A short public name for a key (never the key): for key ids and logs."""
    return hashlib.sha256(b"tutela:key-id:" + key).hexdigest()[:16]


def wrap_key(kek: bytes, key: bytes, *, context: bytes) -> bytes:
    """Encrypt `key` under `kek`, bound to `context` (the owner's id)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, key, context)


def unwrap_key(kek: bytes, wrapped: bytes, *, context: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
    except (InvalidTag, ValueError) as exc:
        raise IntegrityFailure("A wrapped key failed its integrity check.") from exc


class KeyWrapper:
    """`wrap_key` and `unwrap_key` under one key-encryption key, its AES-GCM state made
    once: for re-wrapping many keys in a row (a key epoch's rotation)."""

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except (InvalidTag, ValueError) as exc:
            raise IntegrityFailure("A wrapped key failed its integrity check.") from exc


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt a small personal field (a name, a transcript) bound to `aad`."""
    nonce = os.urandom(NONCE_BYTES)
    return SEALED_VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    if sealed[:1] != SEALED_VERSION:
        raise IntegrityFailure("A sealed field has an unknown format.")
    try:
        return AESGCM(key).decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
    except (InvalidTag, ValueError) as exc:
        raise IntegrityFailure("A sealed field failed its integrity check.") from exc


def keyed_digest(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104): a lookup index or fingerprint that reveals nothing alone."""
    return hmac.new(key, data, hashlib.sha256).digest()


def item_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """An item key's encryption key and MAC key, derived apart with HKDF-SHA-256 (RFC 5869).

    One key never serves two primitives; destroying the item key destroys both.
    """
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"tutela:item:v1").derive(key)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def derive_key(key: bytes, *, info: bytes) -> bytes:
    """A 256-bit key for one purpose (`info`) derived from `key` with HKDF-SHA-256 (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def content_mac_key(key: bytes) -> bytes:
    """A MAC key derived from an item key, so one key never serves two primitives."""
    return keyed_digest(key, b"tutela:content-mac")


def _chunk_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def sealed_size(plain_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """Bytes a blob of `plain_size` takes once sealed."""
    chunks = max(1, -(-plain_size // chunk_size))
    return STREAM_HEADER.size + plain_size + chunks * TAG_BYTES


class StreamSealer:
    """Seals a stream of plaintext pieces of any size into chunked AEAD ciphertext.

    Feed it with `seal(pieces)`; it yields the header, then one sealed chunk at a time.
    While it runs it keeps the plaintext size and an HMAC-SHA-256 of the plaintext under
    `mac_key`, so the caller learns both without a second pass.
    """

    def __init__(
        self,
        key: bytes,
        *,
        aad: bytes,
        chunk_size: int = DEFAULT_CHUNK,
        mac_key: bytes | None = None,
    ) -> None:
        if chunk_size <= 0 or chunk_size > MAX_CHUNK:
            raise ValueError("chunk size out of range")
        self._aead = AESGCM(key)
        self._chunk = chunk_size
        self._prefix = os.urandom(STREAM_PREFIX_BYTES)
        self._header = STREAM_HEADER.pack(STREAM_MAGIC, chunk_size, self._prefix)
        self._aad = self._header + aad
        self._mac = hmac.new(mac_key or content_mac_key(key), digestmod=hashlib.sha256)
        self.plain_size = 0

    @property
    def digest(self) -> bytes:
        return self._mac.digest()

    def seal(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        yield self._header
        size = self._chunk
        buf = bytearray()
        pending: bytes | memoryview | None = None
        index = 0
        for piece in pieces:
            if not piece:
                continue
            self._mac.update(piece)
            self.plain_size += len(piece)
            view = memoryview(piece)
            if buf:
                # Top up the partial chunk first.
                take = min(size - len(buf), len(view))
                buf += view[:take]
                view = view[take:]
                if len(buf) < size:
                    continue
                full: bytes | memoryview = bytes(buf)
                buf.clear()
                if pending is not None:
                    yield self._seal_chunk(pending, index, last=False)
                    index += 1
                pending = full
            # Whole chunks straight from the caller's buffer: no copy.
            while len(view) >= size:
                if pending is not None:
                    yield self._seal_chunk(pending, index, last=False)
                    index += 1
                pending = view[:size]
                view = view[size:]
            buf += view
        if buf:
            if pending is not None:
                yield self._seal_chunk(pending, index, last=False)
                index += 1
            pending = bytes(buf)
        yield self._seal_chunk(pending if pending is not None else b"", index, last=True)

    def _seal_chunk(self, chunk: bytes | memoryview, index: int, *, last: bool) -> bytes:
        return self._aead.encrypt(_chunk_nonce(self._prefix, index, last), chunk, self._aad)


ReadAt = Callable[[int, int], bytes]
"""Reads `length` bytes of a sealed blob from `offset` (a blob store's ranged read)."""


class StreamOpener:
    """Decrypts a sealed blob, whole or by plaintext range, one chunk in memory at a time."""

    def __init__(self, key: bytes, *, aad: bytes, header: bytes, plain_size: int) -> None:
        if len(header) != STREAM_HEADER.size:
            raise IntegrityFailure("A sealed blob is truncated.")
        magic, chunk, prefix = STREAM_HEADER.unpack(header)
        if magic != STREAM_MAGIC or chunk <= 0 or chunk > MAX_CHUNK:
            raise IntegrityFailure("A sealed blob has an unknown format.")
        self._aead = AESGCM(key)
        self._chunk: int = chunk
        self._prefix: bytes = prefix
        self._aad = header + aad
        self.plain_size = plain_size
        self._last_index = max(0, -(-plain_size // chunk) - 1)

    @property
    def chunk_size(self) -> int:
        return self._chunk

    def chunk_span(self, index: int) -> tuple[int, int]:
        """Offset and length of chunk `index` inside the sealed blob."""
        start = STREAM_HEADER.size + index * (self._chunk + TAG_BYTES)
        if index < self._last_index:
            return start, self._chunk + TAG_BYTES
        tail = self.plain_size - self._last_index * self._chunk
        return start, tail + TAG_BYTES

    def open_chunk(self, index: int, sealed_chunk: bytes | memoryview) -> bytes:
        last = index == self._last_index
        try:
            return self._aead.decrypt(
                _chunk_nonce(self._prefix, index, last), sealed_chunk, self._aad
            )
        except InvalidTag as exc:
            raise IntegrityFailure("A sealed blob failed its integrity check.") from exc

    def read(
        self,
        read_at: ReadAt,
        start: int = 0,
        end: int | None = None,
        *,
        read_bytes: int = 2 * 1024 * 1024,
    ) -> Iterator[bytes]:
        """Plaintext bytes [start, end) of the blob, decrypted chunk by chunk.

        Consecutive chunks are fetched together, up to `read_bytes` per read, so an
        object store answers a few large ranged GETs rather than one per chunk; memory
        stays at one such read.
        """
        stop = self.plain_size if end is None else min(end, self.plain_size)
        if start >= stop:
            if self.plain_size == 0:
                offset, length = self.chunk_span(0)
                self.open_chunk(0, read_at(offset, length))
            return
        first, final = start // self._chunk, (stop - 1) // self._chunk
        per_read = max(1, read_bytes // (self._chunk + TAG_BYTES))
        for group in range(first, final + 1, per_read):
            indexes = range(group, min(group + per_read, final + 1))
            offset, _ = self.chunk_span(indexes[0])
            last_offset, last_length = self.chunk_span(indexes[-1])
            span = last_offset + last_length - offset
            sealed = memoryview(read_at(offset, span))
            if len(sealed) != span:
                raise IntegrityFailure("A sealed blob is truncated.")
            for index in indexes:
                chunk_offset, length = self.chunk_span(index)
                at = chunk_offset - offset
                plain = self.open_chunk(index, sealed[at : at + length])
                base = index * self._chunk
                yield plain[max(0, start - base) : stop - base]
