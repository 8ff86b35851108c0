"""Real faults for erasure tests: a blob store that refuses deletes, a blob copy that
keeps coming back, and a worker loop that runs a request until it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta

from tutela.container import Container
from tutela.core.clock import FakeClock
from tutela.erasure.models import ErasureRequest, Step
from tutela.vault.blobs import BlobStore


class RefusingDeletes:
    """A blob store (the BlobStore Protocol) whose deletes fail while `broken`, as a
    bucket whose policy denies `DeleteObject` does; reads and writes go to the real one."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.broken = True
        self.refused = 0

    def _refuse(self) -> None:
        if self.broken:
            self.refused += 1
            raise PermissionError("delete denied")

    def write(self, key: str, pieces: Iterable[bytes]) -> int:
        return self.inner.write(key, pieces)

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.read_at(key, offset, length)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self._refuse()
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.keys(prefix)

    def delete_many(self, keys: Iterable[str]) -> int:
        self._refuse()
        return self.inner.delete_many(keys)

    def delete_prefix(self, prefix: str) -> int:
        self._refuse()
        return self.inner.delete_prefix(prefix)


def refuse_deletes(container: Container) -> RefusingDeletes:
    """Put a store that refuses deletes in front of the container's blob store."""
    faulty = RefusingDeletes(container.vault.blobs)
    container.vault.blobs = faulty
    return faulty


class ComingBack:
    """A copy of a blob that reappears after each `tombstones` step (a replica syncing
    it back, say) until `stopped`: the remnant check must find it every time."""

    def __init__(self, container: Container, blob_key: str) -> None:
        blobs = container.vault.blobs
        self.container = container
        self.blob_key = blob_key
        self.copy = blobs.read_at(blob_key, 0, blobs.size(blob_key))
        self.stopped = False

    def __call__(self, _request_id: uuid.UUID, step: Step) -> None:
        blobs = self.container.vault.blobs
        if not self.stopped and step is Step.TOMBSTONES and not blobs.exists(self.blob_key):
            blobs.write(self.blob_key, [self.copy])


def status(container: Container, request_id: uuid.UUID) -> ErasureRequest:
    with container.stores.session() as s:
        row = s.get(ErasureRequest, request_id)
        assert row is not None
        return row


def run_until_failed(container: Container, clock: FakeClock, request_id: uuid.UUID) -> int:
    """Worker passes (the clock moved past each retry delay) until the request fails;
    how many passes it took."""
    for passes in range(1, 100):
        container.erasure.run_pending()
        if status(container, request_id).status == "failed":
            return passes
        clock.advance(timedelta(seconds=31))
    raise AssertionError("the request never failed")
