"""Where the master key comes from: a key file by default, an environment variable, a KMS.

The master key (KEK) never reaches either database. It wraps the profile keys held in the
key store; a KMS-backed source implements the same Protocol.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tutela.core.errors import ConfigurationError, KeyUnavailable
from tutela.vault import crypto


class KeySource(Protocol):
    def current_id(self) -> str:
        """The id of the master key that wraps new profile keys."""
        ...

    def key(self, key_id: str) -> bytes:
        """The master key `key_id`; KeyUnavailable once it has been retired."""
        ...

    def key_ids(self) -> list[str]:
        """Every master key id this source still holds, the current one included."""
        ...

    def begin_rotation(self) -> str:
        """Make a new current master key, keeping the old ones readable; return its id."""
        ...

    def retire(self, key_id: str) -> None:
        """Forget a master key for good: called once nothing is wrapped under it."""
        ...


class FileKeySource:
    """Master keys in a JSON key file, created with mode 0600 on first use.

    The file holds the current key and, during a rotation, the keys being replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int], str, dict[str, bytes]] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            # Several API processes may start at once on a fresh home: one makes the key.
            if not path.exists():
                key = crypto.new_key()
                self._save({"current": crypto.key_fingerprint(key), "keys": [_entry(key)]})
        if path.stat().st_mode & 0o077:
            raise ConfigurationError(
                "The master key file is readable by other users; set its mode to 0600.",
                code="key_file_mode",
            )

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError("The master key file cannot be read.") from exc
        if not isinstance(data, dict) or "current" not in data or "keys" not in data:
            raise ConfigurationError("The master key file is malformed.")
        return data

    def _state(self) -> tuple[str, dict[str, bytes]]:
        # Re-read only when the file changed: another process may have rotated the key.
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._cache is None or self._cache[0] != stamp:
            data = self._read()
            keys = {e["id"]: base64.b64decode(e["key"]) for e in data["keys"]}
            self._cache = (stamp, str(data["current"]), keys)
        return self._cache[1], self._cache[2]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock across processes for every read-modify-write of the file."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, data: dict[str, Any]) -> None:
        """Write the whole file anew (a private temporary file, then rename); caller locks."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".master-key-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._cache = None

    def current_id(self) -> str:
        return self._state()[0]

    def key(self, key_id: str) -> bytes:
        try:
            return self._state()[1][key_id]
        except KeyError as exc:
            raise KeyUnavailable("A master key is no longer available.") from exc

    def key_ids(self) -> list[str]:
        return list(self._state()[1])

    def begin_rotation(self) -> str:
        with self._locked():
            data = self._read()
            key = crypto.new_key()
            data["keys"].append(_entry(key))
            data["current"] = crypto.key_fingerprint(key)
            self._save(data)
        return str(data["current"])

    def retire(self, key_id: str) -> None:
        with self._locked():
            data = self._read()
            if data["current"] == key_id:
                raise ValueError("the current master key cannot be retired")
            data["keys"] = [e for e in data["keys"] if e["id"] != key_id]
            self._save(data)


class StaticKeySource:
    """One master key given from outside (`TUTELA_MASTER_KEY`, base64 of 32 bytes).

    Rotation is done where the key lives (a secret manager or KMS), so it is refused here.
    """

    def __init__(self, encoded: str) -> None:
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigurationError("TUTELA_MASTER_KEY is not valid base64.") from exc
        if len(key) != crypto.KEY_BYTES:
            raise ConfigurationError("TUTELA_MASTER_KEY must be 32 bytes (256 bits).")
        self._key = key
        self._id = crypto.key_fingerprint(key)

    def current_id(self) -> str:
        return self._id

    def key(self, key_id: str) -> bytes:
        if key_id != self._id:
            raise KeyUnavailable("A master key is no longer available.")
        return self._key

    def key_ids(self) -> list[str]:
        return [self._id]

    def begin_rotation(self) -> str:
        raise ConfigurationError(
            "The master key comes from TUTELA_MASTER_KEY; rotate it with a key file or a KMS.",
            code="rotation_unsupported",
        )

    def retire(self, key_id: str) -> None:
        self.begin_rotation()


def _entry(key: bytes) -> dict[str, str]:
    return {
        "id": crypto.key_fingerprint(key),
        "key": base64.b64encode(key).decode(),
        "created_at": datetime.now(UTC).isoformat(),
    }
