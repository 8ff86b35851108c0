"""Blob stores: where sealed media bytes live. A local folder, or any S3-compatible store.

Stores only ever see ciphertext (vault/crypto.py seals before a byte is written), so a
copied bucket or disk holds nothing readable without the key store (R8).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tutela.core.errors import NotFound

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


def _is_missing(exc: Exception) -> bool:
    """A ClientError that means "no such object"; anything else (403, 500…) is re-raised."""
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code", "")) in _MISSING


_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")
S3_PART_BYTES = 8 * 1024 * 1024


def check_blob_key(key: str) -> str:
    """Blob keys are made by Tutela, never by a caller; still, refuse anything path-like."""
    if not _KEY_PATTERN.match(key) or ".." in key or "//" in key:
        raise ValueError("invalid blob key")
    return key


class BlobStore(Protocol):
    def write(self, key: str, pieces: Iterable[bytes]) -> int:
        """Store `pieces` under `key` atomically; return the bytes written."""
        ...

    def read_at(self, key: str, offset: int, length: int) -> bytes: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error (idempotent)."""
        ...

    def exists(self, key: str) -> bool: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove each of `keys` (missing ones are not an error); return how many asked."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob under `prefix`, partial uploads included; return how many."""
        ...


class LocalBlobStore:
    """Blobs as files under one folder.

    A new blob is created in place (`O_EXCL`) and fsynced: item ids are unique and blobs
    immutable, and an item's row commits only after its blob is complete, so no reader
    can meet a partial file. On journaling filesystems (ext4, XFS) that fsync also
    commits the file's directory entry, sparing a rename and a directory fsync per
    upload. Replacing an existing blob (rare) goes through a temporary file, a rename
    and a directory fsync, so it is atomic.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_blob_key(key)

    def write(self, key: str, pieces: Iterable[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._replace(path, pieces)
        try:
            return self._fill(fd, pieces)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _fill(self, fd: int, pieces: Iterable[bytes]) -> int:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                out.write(piece)
                written += len(piece)
            if self.fsync:
                out.flush()
                os.fsync(out.fileno())
        return written

    def _replace(self, path: Path, pieces: Iterable[bytes]) -> int:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            written = self._fill(fd, pieces)
            os.replace(tmp, path)
            if self.fsync:
                # The rename itself must reach the disk, not only the file's bytes.
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError as exc:
            raise NotFound("The stored media is gone.", code="blob_missing") from exc

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound("The stored media is gone.", code="blob_missing") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _under(self, prefix: str) -> Path:
        """The deepest folder that holds every key starting with `prefix`."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return self.root / check_blob_key(folder) if folder else self.root

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self._under(prefix)
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".incoming-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete_many(self, keys: Iterable[str]) -> int:
        count = 0
        for key in keys:
            self._path(key).unlink(missing_ok=True)
            count += 1
        return count

    def delete_prefix(self, prefix: str) -> int:
        """Every file under the prefix, then its emptied folders: a folder's name is an id."""
        base = self._under(prefix)
        if not base.is_dir():
            return 0
        count = 0
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            here = Path(dirpath)
            for name in filenames:
                path = here / name
                if path.relative_to(self.root).as_posix().startswith(prefix) or (
                    name.startswith(".incoming-")
                ):
                    path.unlink(missing_ok=True)
                    count += 1
            for name in dirnames:
                with contextlib.suppress(OSError):  # not empty: other keys live there
                    (here / name).rmdir()
        if base != self.root and prefix.endswith("/"):
            with contextlib.suppress(OSError):
                base.rmdir()
        return count


class S3BlobStore:
    """Blobs in an S3-compatible bucket; large blobs go up as a multipart upload.

    Memory stays at one part (8 MiB) whatever the blob's size.
    """

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def connect(
        cls,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        create_bucket: bool = False,
    ) -> S3BlobStore:
        import boto3  # noqa: PLC0415  (only installs using S3 pay for the import)

        client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )
        store = cls(client, bucket)
        if create_bucket:
            store.ensure_bucket()
        return store

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def write(self, key: str, pieces: Iterable[bytes]) -> int:
        check_blob_key(key)
        buf = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        written = 0
        try:
            for piece in pieces:
                buf += piece
                written += len(piece)
                if len(buf) >= S3_PART_BYTES:
                    if upload_id is None:
                        upload_id = self.client.create_multipart_upload(
                            Bucket=self.bucket, Key=key
                        )["UploadId"]
                    part = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=len(parts) + 1,
                        Body=bytes(buf),
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
                    buf.clear()
            if upload_id is None:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(buf))
                return written
            if buf:
                part = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=len(parts) + 1,
                    Body=bytes(buf),
                )
                parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            if upload_id is not None:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return written

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        if length <= 0:
            return b""
        try:
            obj = self.client.get_object(
                Bucket=self.bucket,
                Key=check_blob_key(key),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # past the end, as a file read would be
            if _is_missing(exc):
                raise NotFound("The stored media is gone.", code="blob_missing") from exc
            raise
        return obj["Body"].read()

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            return self.client.head_object(Bucket=self.bucket, Key=check_blob_key(key))[
                "ContentLength"
            ]
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound("The stored media is gone.", code="blob_missing") from exc
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=check_blob_key(key))

    def delete_many(self, keys: Iterable[str]) -> int:
        """DeleteObjects, a thousand keys a call (the S3 API's limit)."""
        batch: list[str] = []
        count = 0
        for key in keys:
            batch.append(check_blob_key(key))
            if len(batch) == 1000:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: list[str]) -> int:
        result = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
        )
        errors = result.get("Errors", [])
        if errors:
            raise RuntimeError(f"{len(errors)} blobs could not be deleted")
        return len(keys)

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_many(list(self.keys(prefix)))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            self.client.head_object(Bucket=self.bucket, Key=check_blob_key(key))
        except ClientError as exc:
            # Only "not found" means absent: an erasure check must not mistake a 403 for gone.
            if _is_missing(exc):
                return False
            raise
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]
