"""The purposes consent is asked for, and the version of the notice that asks (C3, C4).

Read from a TOML file (the packaged `default_purposes.toml`, or the operator's copy),
checked whole: an unknown key, a missing built-in purpose or a `changed_in` beyond the
notice version is refused with every problem named.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any


class Builtin(StrEnum):
    """Purposes every part of Tutela knows by name; an operator may add more."""

    STORAGE = "storage"
    PRECISE_GEOLOCATION = "precise_geolocation"
    HUMAN_REVIEW = "human_review"
    MODEL_TRAINING = "model_training"
    THIRD_PARTY_DISCLOSURE = "third_party_disclosure"


_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
_KEYS = {"title", "description", "adult_default", "changed_in", "separate"}
OFF_BY_DEFAULT = (Builtin.HUMAN_REVIEW, Builtin.MODEL_TRAINING, Builtin.THIRD_PARTY_DISCLOSURE)
"""C4: these are never on for anyone who has not said yes."""


class PurposesError(ValueError):
    """A purposes file that is not valid; `problems` names each fault."""

    def __init__(self, problems: list[str], *, source: str) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.problems = problems
        self.source = source


@dataclass(frozen=True)
class Purpose:
    name: str
    title: str
    description: str
    adult_default: bool
    changed_in: int
    """The notice version that last changed what this purpose means (C3)."""
    separate: bool
    """Asked for on its own, never in one step with another purpose (C4)."""


@dataclass(frozen=True)
class Catalogue:
    notice_version: int
    purposes: dict[str, Purpose]
    source: str = ""
    """The file's name, as the published notice cites it (C3)."""
    sha256: str = ""
    """SHA-256 of the file's text: which file a published notice was generated from."""

    def __getitem__(self, name: str) -> Purpose:
        return self.purposes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.purposes

    @property
    def names(self) -> list[str]:
        return list(self.purposes)


def _purpose(name: str, raw: Any, notice_version: int, problems: list[str]) -> Purpose | None:
    where = f"[purpose.{name}]"
    if not _NAME.match(name):
        problems.append(f"{where}: a purpose name is 2-40 lower-case letters, digits or _")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a table")
        return None
    for key in sorted(set(raw) - _KEYS):
        problems.append(f"{where}: unknown key {key!r}")
    title, description = raw.get("title"), raw.get("description")
    default, changed, separate = (
        raw.get("adult_default"),
        raw.get("changed_in", 1),
        raw.get("separate", False),
    )
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{where}: title is required text")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{where}: description is required text")
    if not isinstance(default, bool):
        problems.append(f"{where}: adult_default is true or false")
    if name in OFF_BY_DEFAULT and default is True:
        problems.append(f"{where}: {name} is off by default (C4)")
    if not isinstance(changed, int) or isinstance(changed, bool) or changed < 1:
        problems.append(f"{where}: changed_in is a notice version (1 or more)")
    elif changed > notice_version:
        problems.append(f"{where}: changed_in {changed} is after notice_version {notice_version}")
    if not isinstance(separate, bool):
        problems.append(f"{where}: separate is true or false")
    if name == Builtin.THIRD_PARTY_DISCLOSURE and separate is not True:
        problems.append(f"{where}: disclosure to third parties is asked for separately (C4)")
    if problems:
        return None
    assert isinstance(title, str) and isinstance(description, str)
    return Purpose(
        name=name,
        title=title.strip(),
        description=description.strip(),
        adult_default=bool(default),
        changed_in=int(changed),
        separate=bool(separate),
    )


def parse_purposes(text: str, *, source: str = "purposes.toml") -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PurposesError([f"not TOML: {exc}"], source=source) from None
    problems: list[str] = []
    for key in sorted(set(data) - {"notice_version", "purpose"}):
        problems.append(f"unknown top-level key {key!r}")
    version = data.get("notice_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append("notice_version is a whole number, 1 or more")
        version = 1
    table = data.get("purpose", {})
    if not isinstance(table, dict):
        problems.append("[purpose.*] must be tables")
        table = {}
    purposes: dict[str, Purpose] = {}
    for name, raw in table.items():
        own: list[str] = []
        purpose = _purpose(name, raw, version, own)
        problems += own
        if purpose is not None:
            purposes[name] = purpose
    for builtin in Builtin:
        if builtin.value not in table:
            problems.append(f"[purpose.{builtin.value}] is required")
    if problems:
        raise PurposesError(problems, source=source)
    return Catalogue(
        notice_version=version,
        purposes=purposes,
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def default_purposes_path() -> Path:
    return Path(str(resources.files("tutela.consent") / "default_purposes.toml"))


def load_purposes(path: Path | None = None) -> Catalogue:
    path = path or default_purposes_path()
    return parse_purposes(path.read_text(encoding="utf-8"), source=path.name)
