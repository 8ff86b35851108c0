"""The retention policy file: one maximum age per kind and subject, legal holds, the
inactive-child and consent-contact limits, and how briefly ephemeral voice is kept
(A1-A3, A6, A7, C5, C9, C11).

The file is TOML read with the standard library only. Every problem in it is reported
with the line it is on, all of them at once, so an operator fixes a file in one pass.
The same parsed `Policy` drives deletion and generates the published notice (A7).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tutela.core.errors import InvalidInput
from tutela.households.models import ProfileKind
from tutela.vault.models import ItemKind

POLICY_VERSION = 1
# No maximum age, deadline or grace period may exceed ten years: nothing is kept
# indefinitely, and a typo of extra digits is caught (A6, C9).
MAX_DAYS = 3650
# A2: an inactive child's data is deleted within 90 days of identification. The erasure
# is requested by the first sweep after the grace period and completes within minutes,
# so the grace period ends a day short of 90.
MAX_INACTIVE_GRACE_DAYS = 89
# C11: a voice used only in place of typed words is kept only briefly. Without an
# [ephemeral_voice] table its transcript (and the recording's row) go after a day; a
# policy may shorten that to an hour or lengthen it to three days, no more.
DEFAULT_EPHEMERAL_VOICE_MAX_AGE = timedelta(hours=24)
MAX_EPHEMERAL_VOICE_HOURS = 72

# A6: the automatic-deletion intervals a customer can choose; None keeps recordings until
# the policy's maximum age. Children are never offered "never".
AUTO_DELETE_CHOICES: Mapping[str, timedelta | None] = MappingProxyType(
    {"3m": timedelta(days=90), "18m": timedelta(days=548), "never": None}
)
CHILD_AUTO_DELETE_CHOICES: tuple[str, ...] = ("3m", "18m")


def check_auto_delete_choice(choice: str, subject: ProfileKind) -> timedelta | None:
    """The interval of an automatic-deletion choice (A6); "never" is refused for children.

    Raises `InvalidInput` with code `invalid_auto_delete` for an unknown choice and
    `child_never_not_allowed` for "never" on a child profile.
    """
    if choice not in AUTO_DELETE_CHOICES:
        offered = ", ".join(AUTO_DELETE_CHOICES)
        raise InvalidInput(
            f"Automatic deletion must be one of {offered}.", code="invalid_auto_delete"
        )
    if ProfileKind(subject) is ProfileKind.CHILD and choice not in CHILD_AUTO_DELETE_CHOICES:
        raise InvalidInput(
            "A child's recordings must be deleted automatically after 3 or 18 months.",
            code="child_never_not_allowed",
        )
    return AUTO_DELETE_CHOICES[choice]


@dataclass(frozen=True)
class Rule:
    """How long one kind of item about one class of subject may be kept, and why (C9)."""

    kind: ItemKind
    subject: ProfileKind
    purpose: str
    business_need: str
    max_age: timedelta
    line: int


@dataclass(frozen=True)
class LegalHold:
    """A legal hold: deletion within its scope waits until it expires. It always expires."""

    id: str
    household_id: uuid.UUID
    profile_id: uuid.UUID | None
    reason: str
    expires_at: datetime
    line: int

    def covers(self, household_id: uuid.UUID, profile_id: uuid.UUID | None, now: datetime) -> bool:
        """True while the hold is in force and the household (and profile, if named) match.

        A hold on a whole household covers each of its profiles; a hold on one profile
        does not cover the household's data that belongs to no profile.
        """
        if now >= self.expires_at or household_id != self.household_id:
            return False
        return self.profile_id is None or self.profile_id == profile_id


@dataclass(frozen=True)
class Policy:
    """A parsed, complete and valid retention policy (A1-A3, A6, A7, C5, C9)."""

    rules: Mapping[tuple[ItemKind, ProfileKind], Rule]
    holds: tuple[LegalHold, ...]
    inactive_child_after: timedelta
    inactive_child_grace: timedelta
    consent_contact_max_age: timedelta
    consent_contact_purpose: str
    source: str
    sha256: str
    ephemeral_voice_max_age: timedelta = DEFAULT_EPHEMERAL_VOICE_MAX_AGE
    """C11: how long the transcript of a voice recording used only in place of typed
    words, and the recording's row (its audio is never stored), are kept."""

    def max_age(self, kind: ItemKind | str, subject: ProfileKind | str) -> timedelta:
        """The longest an item of `kind` about a `subject` may be kept; ValueError if unknown."""
        return self.rules[(ItemKind(kind), ProfileKind(subject))].max_age

    def hold_for(
        self, household_id: uuid.UUID, profile_id: uuid.UUID | None, now: datetime
    ) -> LegalHold | None:
        """The active hold covering this scope that lasts longest, or None."""
        covering = [h for h in self.holds if h.covers(household_id, profile_id, now)]
        return max(covering, key=lambda h: h.expires_at, default=None)

    def active_holds(self, now: datetime) -> tuple[LegalHold, ...]:
        """The holds still in force at `now`."""
        return tuple(h for h in self.holds if now < h.expires_at)


class PolicyError(Exception):
    """A policy file that cannot be used; `problems` lists (line, message), by line.

    Not a `TutelaError`: it is an operator's configuration mistake, reported on the
    command line or at start-up, never an answer to a customer.
    """

    def __init__(self, problems: Iterable[tuple[int, str]], *, source: str = "policy.toml"):
        self.source = source
        self.problems: list[tuple[int, str]] = sorted(problems, key=lambda p: p[0])
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}:{line}: {message}" for line, message in self.problems)


def default_policy_path() -> Path:
    """The policy packaged with Tutela."""
    return Path(__file__).with_name("default_policy.toml")


def load_policy(path: Path | None = None) -> Policy:
    """Read and check the policy at `path` (None: the packaged default).

    Raises `PolicyError` for a file that is not a valid policy and `OSError` for one that
    cannot be read.
    """
    path = path or default_policy_path()
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError([(line, "the file is not UTF-8 text")], source=path.name) from None
    return parse_policy(text, source=path.name)


def parse_policy(text: str, *, source: str = "policy.toml") -> Policy:
    """Parse and check a policy; raise one `PolicyError` listing every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([_syntax_problem(str(exc), text)], source=source) from None
    checker = _Checker(_Layout.scan(text))
    policy = checker.policy(data, source=source, sha256=_sha256(text))
    if checker.problems or policy is None:
        raise PolicyError(checker.problems, source=source)
    return policy


def _sha256(text: str) -> str:
    # UTF-8 round-trips exactly, so this is the digest of the file's bytes.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_problem(message: str, text: str) -> tuple[int, str]:
    found = _TOML_POSITION.search(message)
    if found:
        reason = message[: found.start()]
        return int(found.group(1)), f"not valid TOML: {reason} (column {found.group(2)})"
    reason = _TOML_AT_END.sub("", message)
    return max(1, len(text.splitlines())), f"not valid TOML: {reason} (at the end of the file)"


# --- where things are: tomllib gives no positions for values, so scan the text -----------

_HEADER = re.compile(r"^\s*(\[\[?)([^\[\]]+)\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")


@dataclass
class _Table:
    line: int
    keys: dict[str, int] = field(default_factory=dict)

    def key_line(self, key: str) -> int:
        """The line of `key =` in this table, else the table's header line."""
        return self.keys.get(key, self.line)


@dataclass
class _Layout:
    """Lines of the headers and keys of a TOML text that tomllib has already accepted."""

    root: _Table
    tables: dict[str, _Table]
    arrays: dict[str, list[_Table]]
    last_line: int

    @classmethod
    def scan(cls, text: str) -> _Layout:
        root = _Table(line=1)
        layout = cls(root=root, tables={}, arrays={}, last_line=1)
        current = root
        open_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            layout.last_line = number
            if open_string is not None:
                # Inside a multi-line string: nothing here is a header or a key.
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            header = _HEADER.match(line)
            if header:
                current = layout._enter(header.group(1), _key_path(header.group(2)), number)
                continue
            key = _KEY.match(line)
            if key:
                current.keys.setdefault(_unquote(key.group(1)), number)
            for delimiter in ('"""', "'''"):
                if line.count(delimiter) % 2 == 1:
                    open_string = delimiter
                    break
        return layout

    def _enter(self, brackets: str, path: list[str], number: int) -> _Table:
        table = _Table(line=number)
        if not path:
            return table
        if len(path) == 1 and brackets == "[[":
            self.arrays.setdefault(path[0], []).append(table)
            return table
        if len(path) == 1:
            self.tables.setdefault(path[0], table)
            return self.tables[path[0]]
        # A sub-table such as [rule.extra] shows up as an unknown key "extra" of its parent.
        parent: _Table
        if path[0] in self.arrays:
            parent = self.arrays[path[0]][-1]
        elif path[0] in self.tables:
            parent = self.tables[path[0]]
        else:
            self.root.keys.setdefault(path[0], number)
            return table
        parent.keys.setdefault(path[1], number)
        return table

    def table(self, name: str) -> _Table:
        return self.tables.get(name) or _Table(line=self.root.key_line(name))

    def element(self, name: str, index: int) -> _Table:
        elements = self.arrays.get(name, [])
        if index < len(elements):
            return elements[index]
        # An inline array (rule = [{...}]) has no headers: point at its key.
        return _Table(line=self.root.key_line(name))


def _key_path(dotted: str) -> list[str]:
    return [_unquote(part.strip()) for part in dotted.split(".") if part.strip()]


def _unquote(key: str) -> str:
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


# --- checking -----------------------------------------------------------------------------

_TOP_KEYS = ("version", "inactive_child", "consent_contact", "ephemeral_voice", "rule", "hold")
_INACTIVE_KEYS = ("inactive_after_days", "grace_days")
_CONSENT_KEYS = ("max_age_days", "purpose")
_EPHEMERAL_KEYS = ("transcript_max_age_hours",)
_RULE_KEYS = ("kind", "subject", "purpose", "business_need", "max_age_days")
_HOLD_KEYS = ("id", "household", "profile", "reason", "expires")


def _describe(value: object) -> str:
    """A TOML reader's name for a value's type; never the value itself."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time of day"
    if isinstance(value, list):
        return "an array"
    return "a table"


class _Checker:
    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self.problems: list[tuple[int, str]] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append((line, message))

    def policy(self, data: dict[str, Any], *, source: str, sha256: str) -> Policy | None:
        root = self.layout.root
        self.unknown_keys(data, _TOP_KEYS, root, "at the top level")
        self.version(data)
        inactive = self.table(data, "inactive_child", "(A1, A2)")
        consent = self.table(data, "consent_contact", "(C5)")
        after = grace = contact_age = None
        contact_purpose = None
        if inactive is not None:
            where = self.layout.table("inactive_child")
            self.unknown_keys(inactive, _INACTIVE_KEYS, where, "in [inactive_child]")
            after = self.days(inactive, "inactive_after_days", where, "[inactive_child]")
            grace = self.days(
                inactive,
                "grace_days",
                where,
                "[inactive_child]",
                most=MAX_INACTIVE_GRACE_DAYS,
                why="an inactive child's data is erased within 90 days of identification (A2)",
            )
        if consent is not None:
            where = self.layout.table("consent_contact")
            self.unknown_keys(consent, _CONSENT_KEYS, where, "in [consent_contact]")
            contact_age = self.days(consent, "max_age_days", where, "[consent_contact]")
            contact_purpose = self.text(consent, "purpose", where, "[consent_contact]")
        ephemeral_age = self.ephemeral_voice(data)
        rules = self.rules(data.get("rule", []))
        holds = self.holds(data.get("hold", []))
        if (
            self.problems
            or after is None
            or grace is None
            or contact_age is None
            or contact_purpose is None
            or ephemeral_age is None
        ):
            return None
        return Policy(
            rules=rules,
            holds=holds,
            inactive_child_after=after,
            inactive_child_grace=grace,
            consent_contact_max_age=contact_age,
            consent_contact_purpose=contact_purpose,
            source=source,
            sha256=sha256,
            ephemeral_voice_max_age=ephemeral_age,
        )

    def ephemeral_voice(self, data: Mapping[str, Any]) -> timedelta | None:
        """The optional [ephemeral_voice] table (C11); the default age when it is absent."""
        if "ephemeral_voice" not in data:
            return DEFAULT_EPHEMERAL_VOICE_MAX_AGE
        table = data["ephemeral_voice"]
        if not isinstance(table, dict):
            self.problem(
                self.layout.root.key_line("ephemeral_voice"),
                f"ephemeral_voice must be a table, not {_describe(table)}",
            )
            return None
        where = self.layout.table("ephemeral_voice")
        self.unknown_keys(table, _EPHEMERAL_KEYS, where, "in [ephemeral_voice]")
        key = "transcript_max_age_hours"
        if key not in table:
            self.problem(where.line, f"[ephemeral_voice] is missing {key}")
            return None
        value, line = table[key], where.key_line(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(line, f"{key} must be a whole number of hours, not {_describe(value)}")
            return None
        if value < 1:
            self.problem(line, f"{key} must be at least 1 hour, not {value}")
            return None
        if value > MAX_EPHEMERAL_VOICE_HOURS:
            self.problem(
                line,
                f"{key} must be at most {MAX_EPHEMERAL_VOICE_HOURS} hours, not {value}: a "
                "voice used in place of typed words is kept only briefly (C11)",
            )
            return None
        return timedelta(hours=value)

    # -- pieces --

    def unknown_keys(
        self, table: Mapping[str, Any], known: tuple[str, ...], where: _Table, place: str
    ) -> None:
        for key in table:
            if key not in known:
                self.problem(
                    where.key_line(key),
                    f"unknown key {key!r} {place}; expected one of {', '.join(known)}",
                )

    def version(self, data: Mapping[str, Any]) -> None:
        if "version" not in data:
            self.problem(1, f"version is missing: write version = {POLICY_VERSION}")
            return
        value = data["version"]
        if not isinstance(value, int) or isinstance(value, bool) or value != POLICY_VERSION:
            self.problem(
                self.layout.root.key_line("version"),
                f"version must be {POLICY_VERSION}, the only version this Tutela reads",
            )

    def table(self, data: Mapping[str, Any], name: str, serves: str) -> Mapping[str, Any] | None:
        if name not in data:
            self.problem(1, f"the [{name}] table is missing {serves}")
            return None
        value = data[name]
        if not isinstance(value, dict):
            self.problem(
                self.layout.root.key_line(name), f"{name} must be a table, not {_describe(value)}"
            )
            return None
        return value

    def days(
        self,
        table: Mapping[str, Any],
        key: str,
        where: _Table,
        place: str,
        *,
        most: int = MAX_DAYS,
        why: str = "no retention may be indefinite (A6, C9)",
    ) -> timedelta | None:
        if key not in table:
            self.problem(where.line, f"{place} is missing {key}")
            return None
        value = table[key]
        line = where.key_line(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(line, f"{key} must be a whole number of days, not {_describe(value)}")
            return None
        if value < 1:
            self.problem(line, f"{key} must be at least 1 day, not {value}")
            return None
        if value > most:
            self.problem(line, f"{key} must be at most {most} days, not {value}: {why}")
            return None
        return timedelta(days=value)

    def text(self, table: Mapping[str, Any], key: str, where: _Table, place: str) -> str | None:
        if key not in table:
            self.problem(where.line, f"{place} is missing {key}")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(where.key_line(key), f"{key} must be a string, not {_describe(value)}")
            return None
        if not value.strip():
            self.problem(where.key_line(key), f"{key} is empty")
            return None
        return value.strip()

    def array(self, value: object, name: str) -> list[Mapping[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem(
                self.layout.root.key_line(name),
                f"{name} must be [[{name}]] tables, not {_describe(value)}",
            )
            return []
        return value

    def choice(
        self, table: Mapping[str, Any], key: str, where: _Table, place: str, options: list[str]
    ) -> str | None:
        value = self.text(table, key, where, place)
        if value is not None and value not in options:
            self.problem(
                where.key_line(key),
                f"unknown {key} {value!r}; expected one of {', '.join(options)}",
            )
            return None
        return value

    def rules(self, value: object) -> Mapping[tuple[ItemKind, ProfileKind], Rule]:
        found: dict[tuple[ItemKind, ProfileKind], Rule] = {}
        first_line: dict[tuple[ItemKind, ProfileKind], int] = {}
        last_line = 1
        for index, raw in enumerate(self.array(value, "rule")):
            where = self.layout.element("rule", index)
            last_line = where.line
            place = f"the [[rule]] at line {where.line}"
            self.unknown_keys(raw, _RULE_KEYS, where, "in [[rule]]")
            kind = self.choice(raw, "kind", where, place, [k.value for k in ItemKind])
            subject = self.choice(raw, "subject", where, place, [s.value for s in ProfileKind])
            purpose = self.text(raw, "purpose", where, place)
            need = self.text(raw, "business_need", where, place)
            max_age = self.days(raw, "max_age_days", where, place)
            if kind is None or subject is None:
                continue
            pair = (ItemKind(kind), ProfileKind(subject))
            if pair in first_line:
                self.problem(
                    where.line,
                    f"a second rule for kind {kind!r} and subject {subject!r}; "
                    f"the first is at line {first_line[pair]}",
                )
                self.problem(
                    first_line[pair],
                    f"the rule for kind {kind!r} and subject {subject!r} is repeated at "
                    f"line {where.line}",
                )
                continue
            first_line[pair] = where.line
            if purpose is not None and need is not None and max_age is not None:
                found[pair] = Rule(
                    kind=pair[0],
                    subject=pair[1],
                    purpose=purpose,
                    business_need=need,
                    max_age=max_age,
                    line=where.line,
                )
        ordered: dict[tuple[ItemKind, ProfileKind], Rule] = {}
        for subject_kind in ProfileKind:
            for item_kind in ItemKind:
                pair = (item_kind, subject_kind)
                if pair not in first_line:
                    self.problem(
                        last_line,
                        f"no rule for kind {item_kind.value!r} and subject "
                        f"{subject_kind.value!r}: every kind needs a rule for adults and "
                        "for children (C9)",
                    )
                elif pair in found:
                    ordered[pair] = found[pair]
        return MappingProxyType(ordered)

    def holds(self, value: object) -> tuple[LegalHold, ...]:
        holds: list[LegalHold] = []
        first_line: dict[str, int] = {}
        for index, raw in enumerate(self.array(value, "hold")):
            where = self.layout.element("hold", index)
            place = f"the [[hold]] at line {where.line}"
            self.unknown_keys(raw, _HOLD_KEYS, where, "in [[hold]]")
            hold_id = self.text(raw, "id", where, place)
            household = self.identifier(raw, "household", where, place, required=True)
            profile = self.identifier(raw, "profile", where, place, required=False)
            reason = self.text(raw, "reason", where, place)
            expires = self.expiry(raw, where, place)
            if hold_id is not None:
                if hold_id in first_line:
                    self.problem(
                        where.line,
                        f"a second hold with id {hold_id!r}; the first is at line "
                        f"{first_line[hold_id]}",
                    )
                    self.problem(
                        first_line[hold_id],
                        f"the hold id {hold_id!r} is used again at line {where.line}",
                    )
                    continue
                first_line[hold_id] = where.line
            if (
                hold_id is None
                or household is None
                or reason is None
                or expires is None
                or ("profile" in raw and profile is None)
            ):
                continue
            holds.append(
                LegalHold(
                    id=hold_id,
                    household_id=household,
                    profile_id=profile,
                    reason=reason,
                    expires_at=expires,
                    line=where.line,
                )
            )
        return tuple(holds)

    def identifier(
        self, table: Mapping[str, Any], key: str, where: _Table, place: str, *, required: bool
    ) -> uuid.UUID | None:
        if key not in table and not required:
            return None
        value = self.text(table, key, where, place)
        if value is None:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            self.problem(where.key_line(key), f"{key} must be a UUID")
            return None

    def expiry(self, table: Mapping[str, Any], where: _Table, place: str) -> datetime | None:
        if "expires" not in table:
            self.problem(where.line, f"{place} is missing expires: no hold is open-ended")
            return None
        value = table["expires"]
        if isinstance(value, datetime):
            # A date-time without an offset is read as UTC, as the file format says.
            if value.tzinfo is None:
                return value.replace(tzinfo=UTC)
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        hint = " (write it without quotes, e.g. 2027-03-01)" if isinstance(value, str) else ""
        self.problem(
            where.key_line("expires"),
            f"expires must be a TOML date or date-time, not {_describe(value)}{hint}",
        )
        return None
