"""Where the master key and the key epochs come from: key files by default, an environment
variable for the master key, a KMS in production.

Neither ever reaches a database. The master key wraps the service keys and seals the
epoch keys; the current epoch key wraps the profile keys held in the key store. Epoch keys
are short-lived: each is destroyed here once every live profile key has been re-wrapped
under its successor, so every stale copy of a destroyed key (a dead tuple, a free page,
the WAL, a replica, a backup of the key store) is wrapped under a key that exists nowhere
(NIST SP 800-88 cryptographic erase, S6). A KMS- or HSM-backed source implements the same
Protocol; it must destroy an epoch key at once, not after a waiting period longer than the
window promised to customers.
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

    def epoch_ids(self) -> list[str]:
        """Every epoch key this source still holds."""
        ...

    def epoch_key(self, epoch_id: str) -> bytes:
        """The epoch key `epoch_id`; KeyUnavailable once it has been destroyed."""
        ...

    def new_epoch(self) -> str:
        """Make and keep a new epoch key; return its id."""
        ...

    def destroy_epoch(self, epoch_id: str) -> None:
        """Destroy an epoch key for good (a no-op if it is already gone)."""
        ...


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes for every read-modify-write of a key file."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save_json(path: Path, data: dict[str, Any]) -> None:
    """Write a key file anew (a private temporary file, synced, then renamed); caller locks."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _epoch_context(epoch_id: str) -> bytes:
    return b"tutela:epoch-key:" + epoch_id.encode()


class EpochFile:
    """Epoch keys in a file of their own (mode 0600), each sealed under a master key.

    The file alone reveals nothing; with the master key, only the epochs still in it. A
    destroyed epoch is removed by writing the file anew and renaming it into place, so no
    version of the file in use still holds it. (Blocks of earlier versions may linger on
    the disk below the file system: keep the home on an encrypted volume, or use a KMS.)
    """

    def __init__(self, path: Path, masters: KeySource) -> None:
        self.path = path
        self.masters = masters
        self._cache: tuple[tuple[int, int, int] | None, dict[str, bytes]] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"epochs": []}
        if self.path.stat().st_mode & 0o077:
            raise ConfigurationError(
                "The epoch key file is readable by other users; set its mode to 0600.",
                code="key_file_mode",
            )
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError("The epoch key file cannot be read.") from exc
        if not isinstance(data, dict) or not isinstance(data.get("epochs"), list):
            raise ConfigurationError("The epoch key file is malformed.")
        return data

    def _keys(self) -> dict[str, bytes]:
        # Re-read only when the file changed: another process may have made or destroyed one.
        stamp = _stamp(self.path)
        if self._cache is None or self._cache[0] != stamp:
            keys = {}
            for entry in self._read()["epochs"]:
                master = self.masters.key(entry["master"])
                keys[entry["id"]] = crypto.unwrap_key(
                    master, base64.b64decode(entry["wrapped"]), context=_epoch_context(entry["id"])
                )
            self._cache = (stamp, keys)
        return self._cache[1]

    def ids(self) -> list[str]:
        return list(self._keys())

    def key(self, epoch_id: str) -> bytes:
        try:
            return self._keys()[epoch_id]
        except KeyError as exc:
            raise KeyUnavailable("A key epoch is no longer available.") from exc

    def create(self) -> str:
        key = crypto.new_key()
        epoch_id = crypto.key_fingerprint(key)
        master_id = self.masters.current_id()
        entry = {
            "id": epoch_id,
            "master": master_id,
            "wrapped": base64.b64encode(
                crypto.wrap_key(self.masters.key(master_id), key, context=_epoch_context(epoch_id))
            ).decode(),
            "created_at": datetime.now(UTC).isoformat(),
        }
        with _locked(self.path):
            data = self._read()
            data["epochs"].append(entry)
            _save_json(self.path, data)
        self._cache = None
        return epoch_id

    def destroy(self, epoch_id: str) -> None:
        with _locked(self.path):
            data = self._read()
            kept = [e for e in data["epochs"] if e["id"] != epoch_id]
            if len(kept) != len(data["epochs"]):
                data["epochs"] = kept
                _save_json(self.path, data)
        self._cache = None

    def reseal(self, old_master_id: str, new_master_id: str) -> None:
        """Seal again under `new_master_id` every epoch key sealed under `old_master_id`."""
        with _locked(self.path):
            data = self._read()
            changed = False
            for entry in data["epochs"]:
                if entry["master"] != old_master_id:
                    continue
                key = crypto.unwrap_key(
                    self.masters.key(old_master_id),
                    base64.b64decode(entry["wrapped"]),
                    context=_epoch_context(entry["id"]),
                )
                entry["wrapped"] = base64.b64encode(
                    crypto.wrap_key(
                        self.masters.key(new_master_id), key, context=_epoch_context(entry["id"])
                    )
                ).decode()
                entry["master"] = new_master_id
                changed = True
            if changed:
                _save_json(self.path, data)
        self._cache = None


class _EpochsInFile:
    """The epoch half of a `KeySource`: epoch keys in an `EpochFile`."""

    epochs: EpochFile

    def epoch_ids(self) -> list[str]:
        return self.epochs.ids()

    def epoch_key(self, epoch_id: str) -> bytes:
        return self.epochs.key(epoch_id)

    def new_epoch(self) -> str:
        return self.epochs.create()

    def destroy_epoch(self, epoch_id: str) -> None:
        self.epochs.destroy(epoch_id)


class FileKeySource(_EpochsInFile):
    """Master keys in a JSON key file, created with mode 0600 on first use.

    The file holds the current key and, during a rotation, the keys being replaced.
    """

    def __init__(self, path: Path, epoch_path: Path | None = None) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int], str, dict[str, bytes]] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.epochs = EpochFile(epoch_path or path.with_name("epochs.key"), self)
        with _locked(path):
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

    def _save(self, data: dict[str, Any]) -> None:
        """Write the whole file anew; caller locks."""
        _save_json(self.path, data)
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
        with _locked(self.path):
            data = self._read()
            key = crypto.new_key()
            data["keys"].append(_entry(key))
            data["current"] = crypto.key_fingerprint(key)
            self._save(data)
        return str(data["current"])

    def retire(self, key_id: str) -> None:
        """Forget a master key; epoch keys sealed under it are sealed under the current first."""
        current = self.current_id()
        if current == key_id:
            raise ValueError("the current master key cannot be retired")
        self.epochs.reseal(key_id, current)
        with _locked(self.path):
            data = self._read()
            data["keys"] = [e for e in data["keys"] if e["id"] != key_id]
            self._save(data)


class StaticKeySource(_EpochsInFile):
    """One master key given from outside (`TUTELA_MASTER_KEY`, base64 of 32 bytes).

    Rotation is done where the key lives (a secret manager or KMS), so it is refused here.
    Epoch keys, sealed under it, are kept in `epoch_path`.
    """

    def __init__(self, encoded: str, epoch_path: Path) -> None:
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigurationError("TUTELA_MASTER_KEY is not valid base64.") from exc
        if len(key) != crypto.KEY_BYTES:
            raise ConfigurationError("TUTELA_MASTER_KEY must be 32 bytes (256 bits).")
        self._key = key
        self._id = crypto.key_fingerprint(key)
        self.epochs = EpochFile(epoch_path, self)

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
