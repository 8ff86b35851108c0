"""One behaviour suite for every blob store: a local folder, and S3 over real HTTP (moto).

Sealed media (R8) lives in these stores, so a write must be all or nothing, a read must
return exactly the bytes asked for, and a delete must leave nothing to read back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from tutela.core.errors import IntegrityFailure, NotFound
from tutela.vault.blobs import S3_PART_BYTES, BlobStore, LocalBlobStore, S3BlobStore
from tutela.vault.crypto import STREAM_HEADER, StreamOpener, StreamSealer, new_key

MiB = 1024 * 1024
BUCKET = "tutela-media"


class UploadInterrupted(Exception):
    """The camera's connection dropped in the middle of an upload."""


@dataclass
class Backend:
    """A store under test, and a way to see what a failed write might have left behind."""

    name: str
    store: BlobStore
    leftovers: Callable[[], list[str]]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the session, over real HTTP on a free port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def local_backend(root: Path) -> Backend:
    store = LocalBlobStore(root)

    def leftovers() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    return Backend("local", store, leftovers)


def s3_backend(endpoint: str) -> Backend:
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    store = S3BlobStore.connect(
        bucket=BUCKET,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        create_bucket=True,
    )

    def leftovers() -> list[str]:
        objects = store.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        uploads = store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        return sorted(
            [f"object:{o['Key']}" for o in objects] + [f"upload:{u['Key']}" for u in uploads]
        )

    return Backend("s3", store, leftovers)


@pytest.fixture(params=["local", "s3"])
def blob_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "blobs")
    return s3_backend(request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def store(blob_backend: Backend) -> BlobStore:
    return blob_backend.store


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of `size` bytes, as an upload arrives."""
    for at in range(0, len(data), size):
        yield data[at : at + size]


def interrupted(data: bytes, *, after: int, piece: int = MiB) -> Iterator[bytes]:
    """Yields pieces of `data`, then fails once `after` bytes have gone through."""
    sent = 0
    for chunk in pieces(data, piece):
        if sent >= after:
            raise UploadInterrupted
        yield chunk
        sent += len(chunk)
    raise UploadInterrupted


def test_write_then_read_ranges(store: BlobStore) -> None:
    data = os.urandom(10_000)
    assert store.write("clips/cam1/0001", pieces(data, 777)) == len(data)
    assert store.size("clips/cam1/0001") == len(data)
    assert store.exists("clips/cam1/0001")
    for offset, length in [(0, len(data)), (0, 1), (9_999, 1), (123, 4_096), (5_000, 5_000)]:
        assert store.read_at("clips/cam1/0001", offset, length) == data[offset : offset + length]
    # A range running past the end returns what there is, as a file or HTTP Range does.
    assert store.read_at("clips/cam1/0001", 9_990, 100) == data[9_990:]


def test_empty_blob(store: BlobStore) -> None:
    assert store.write("clips/empty", iter(())) == 0
    assert store.exists("clips/empty")
    assert store.size("clips/empty") == 0
    assert store.read_at("clips/empty", 0, 0) == b""


def test_overwrite_replaces_content(store: BlobStore) -> None:
    store.write("clips/a", [b"first version, the longer one"])
    store.write("clips/a", [b"second"])
    assert store.size("clips/a") == 6
    assert store.read_at("clips/a", 0, 100) == b"second"
    assert list(store.keys()) == ["clips/a"]


def test_delete_is_idempotent_and_leaves_nothing_to_read(store: BlobStore) -> None:
    store.write("clips/a", [b"sealed bytes"])
    store.delete("clips/a")
    assert not store.exists("clips/a")
    store.delete("clips/a")
    store.delete("clips/never-written")
    with pytest.raises(NotFound) as missing:
        store.read_at("clips/a", 0, 4)
    assert missing.value.code == "blob_missing"
    assert list(store.keys()) == []


def test_missing_blob_is_not_found(store: BlobStore) -> None:
    assert not store.exists("clips/nothing")
    with pytest.raises(NotFound) as read_missing:
        store.read_at("clips/nothing", 0, 10)
    assert read_missing.value.code == "blob_missing"
    assert read_missing.value.status == 404
    with pytest.raises(NotFound) as size_missing:
        store.size("clips/nothing")
    assert size_missing.value.code == "blob_missing"


def test_keys_by_prefix(store: BlobStore) -> None:
    for key in ["clips/h1/a", "clips/h1/b", "clips/h2/a", "thumbs/h1/a"]:
        store.write(key, [key.encode()])
    assert sorted(store.keys("clips/h1/")) == ["clips/h1/a", "clips/h1/b"]
    assert sorted(store.keys("clips/")) == ["clips/h1/a", "clips/h1/b", "clips/h2/a"]
    assert sorted(store.keys()) == ["clips/h1/a", "clips/h1/b", "clips/h2/a", "thumbs/h1/a"]
    assert list(store.keys("nothing/")) == []


def test_large_blob_round_trips(blob_backend: Backend) -> None:
    """Over one S3 part (8 MiB), so S3 goes through a multipart upload."""
    data = os.urandom(2 * S3_PART_BYTES + 3 * MiB + 17)
    assert blob_backend.store.write("clips/long", pieces(data, MiB)) == len(data)
    assert blob_backend.store.size("clips/long") == len(data)
    assert blob_backend.store.read_at("clips/long", 0, len(data)) == data
    edge = S3_PART_BYTES - 5
    assert blob_backend.store.read_at("clips/long", edge, 10) == data[edge : edge + 10]
    assert blob_backend.leftovers() == (
        ["object:clips/long"] if blob_backend.name == "s3" else ["clips/long"]
    )
    if isinstance(blob_backend.store, S3BlobStore):
        head = blob_backend.store.client.head_object(Bucket=BUCKET, Key="clips/long")
        assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 + 8 + 3 MiB


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(MiB, id="before-first-part"),
        pytest.param(S3_PART_BYTES + MiB, id="mid-multipart"),
    ],
)
def test_interrupted_write_leaves_nothing(blob_backend: Backend, after: int) -> None:
    """No blob, no temporary file, no open multipart upload (storage that bills and leaks)."""
    data = os.urandom(3 * S3_PART_BYTES)
    with pytest.raises(UploadInterrupted):
        blob_backend.store.write("clips/cut", interrupted(data, after=after))
    assert not blob_backend.store.exists("clips/cut")
    assert list(blob_backend.store.keys()) == []
    assert blob_backend.leftovers() == []


def test_interrupted_overwrite_keeps_previous_blob(blob_backend: Backend) -> None:
    """A failed rewrite is all or nothing: readers still see the whole previous version."""
    blob_backend.store.write("clips/a", [b"previous"])
    with pytest.raises(UploadInterrupted):
        blob_backend.store.write(
            "clips/a", interrupted(os.urandom(2 * S3_PART_BYTES), after=S3_PART_BYTES)
        )
    assert blob_backend.store.read_at("clips/a", 0, 100) == b"previous"
    assert blob_backend.leftovers() == (
        ["object:clips/a"] if blob_backend.name == "s3" else ["clips/a"]
    )


def test_sealed_blob_round_trips_through_store(store: BlobStore) -> None:
    """What the vault does: seal while writing, then decrypt a range by ranged reads."""
    key, clip = new_key(), os.urandom(3 * MiB + 11)
    sealer = StreamSealer(key, aad=b"clip:1", chunk_size=64 * 1024)
    written = store.write("clips/sealed", sealer.seal(pieces(clip, MiB)))
    assert written == store.size("clips/sealed")
    opener = StreamOpener(
        key,
        aad=b"clip:1",
        header=store.read_at("clips/sealed", 0, STREAM_HEADER.size),
        plain_size=sealer.plain_size,
    )

    def read_at(offset: int, length: int) -> bytes:
        return store.read_at("clips/sealed", offset, length)

    assert b"".join(opener.read(read_at)) == clip
    assert b"".join(opener.read(read_at, 100_000, 200_003)) == clip[100_000:200_003]


def test_truncated_sealed_blob_is_an_integrity_failure(blob_backend: Backend) -> None:
    """A blob that lost its last chunk was tampered with; it is not "gone" (404)."""
    key, clip = new_key(), os.urandom(3 * 1024)
    sealer = StreamSealer(key, aad=b"clip:1", chunk_size=1024)
    sealed = b"".join(sealer.seal([clip]))
    blob_backend.store.write("clips/cut", [sealed[: -(1024 + 16)]])  # the final chunk dropped
    opener = StreamOpener(
        key, aad=b"clip:1", header=sealed[: STREAM_HEADER.size], plain_size=len(clip)
    )
    with pytest.raises(IntegrityFailure):
        b"".join(
            opener.read(
                lambda offset, length: blob_backend.store.read_at("clips/cut", offset, length)
            )
        )


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/../../etc/passwd", "", ".hidden"])
def test_path_like_keys_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.write(key, [b"x"])
    with pytest.raises(ValueError, match="invalid blob key"):
        store.read_at(key, 0, 1)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.exists(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.delete(key)
    assert list(store.keys()) == []


def test_local_write_does_not_escape_root(tmp_path: Path) -> None:
    """A refused key writes nothing, inside the store's folder or beside it."""
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="invalid blob key"):
        store.write("../outside", [b"x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs"]
    assert list((tmp_path / "blobs").iterdir()) == []


def test_a_prefix_goes_whole_and_its_neighbours_stay(blob_backend: Backend) -> None:
    """A profile's erasure removes its prefix (orphans of crashed uploads too), no more."""
    store = blob_backend.store
    for key in ("h1/p1/a", "h1/p1/b", "h1/p10/c", "h1/p2/d", "h2/p1/e"):
        store.write(key, [b"sealed bytes of " + key.encode()])
    if blob_backend.name == "local":
        orphan = Path(store.root) / "h1" / "p1" / ".incoming-crashed"  # type: ignore[attr-defined]
        orphan.write_bytes(b"partial")
    assert store.delete_prefix("h1/p1/") >= 2
    assert sorted(store.keys("h1/")) == ["h1/p10/c", "h1/p2/d"]
    assert list(store.keys("h2/")) == ["h2/p1/e"]
    leftovers = blob_backend.leftovers()
    assert not [k for k in leftovers if "h1/p1/" in k]
    if blob_backend.name == "local":
        # The emptied folder is gone too: its name is the profile's id.
        assert not (Path(store.root) / "h1" / "p1").exists()  # type: ignore[attr-defined]
    assert store.delete_prefix("h1/p1/") == 0


def test_many_blobs_go_in_one_call_and_missing_ones_are_no_error(store: BlobStore) -> None:
    keys = [f"h/p/item-{n:04d}" for n in range(1205)]
    for key in keys[:1200]:
        store.write(key, [b"x"])
    assert store.delete_many(keys) == len(keys)
    assert list(store.keys("h/")) == []
