"""The staff-access policy file: the operator's roles, what each can see, under which
conditions, and how long access records are kept (R2, R3, R9).

TOML read with the standard library. Every problem is reported at once, each with the
place in the file it is about. The published notice is generated from the parsed
`StaffAccessPolicy` (`transparency.notice`), never written by hand, and recording an
access checks it against the same policy (`transparency.service`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tutela.households.models import CameraZone
from tutela.identity.staff import MEDIA_ROLES, StaffRole
from tutela.transparency.rules import REQUIRED_CONDITIONS, AccessPurpose, Condition
from tutela.vault.models import ItemKind

MAX_RECORD_DAYS = 3650  # access records are kept for a stated time, never indefinitely
MAX_REVIEW_DAYS = 30
# DESIGN: bedroom and bathroom cameras are never reviewable, whatever the file says.
ALWAYS_PRIVATE_ZONES = frozenset({CameraZone.BEDROOM, CameraZone.BATHROOM})

_TOP_KEYS = ("version", "operator", "access_records_kept_days", "never_reviewable_zones")
_TABLES = ("purpose", "role")
_PURPOSE_KEYS = ("id", "title", "condition", "requires", "review_within_days")
_ROLE_KEYS = ("id", "title", "duties", "data", "purposes")


@dataclass(frozen=True)
class PurposeRule:
    """When employees may look for one purpose (R2)."""

    purpose: AccessPurpose
    title: str
    condition: str
    requires: frozenset[Condition]
    review_within: timedelta | None


@dataclass(frozen=True)
class RoleRule:
    """One role at the operator: what its holders can see, and for which purposes."""

    role: StaffRole
    title: str
    duties: str
    data: tuple[ItemKind, ...]
    purposes: tuple[AccessPurpose, ...]


@dataclass(frozen=True)
class StaffAccessPolicy:
    """A parsed, complete and valid staff-access policy (R2, R3, R9)."""

    version: int
    operator: str
    records_kept: timedelta
    never_reviewable_zones: tuple[CameraZone, ...]
    purposes: Mapping[AccessPurpose, PurposeRule]
    roles: Mapping[StaffRole, RoleRule]
    source: str
    sha256: str
    """Digest of the parsed content (not of comments or layout): a change of what the
    policy says is a change of this digest."""

    def role(self, role: str) -> RoleRule | None:
        """The rule of a role named by its value, None for a role the policy does not know."""
        return next((rule for name, rule in self.roles.items() if name.value == role), None)

    def role_title(self, role: str) -> str:
        found = self.role(role)
        return found.title if found else role

    def allows(self, role: str, purpose: AccessPurpose, kind: ItemKind | None) -> bool:
        """Whether the role may look for this purpose (at items of `kind`, if given);
        deny by default: an unknown role, purpose or kind opens nothing."""
        rule = self.role(role)
        if rule is None or purpose not in rule.purposes:
            return False
        return kind is None or kind in rule.data

    def requires_ticket(self, purpose: AccessPurpose) -> bool:
        rule = self.purposes.get(purpose)
        return rule is not None and Condition.TICKET in rule.requires


class StaffAccessPolicyError(Exception):
    """A policy file that cannot be used; `problems` lists what is wrong and where.

    An operator's configuration mistake, reported at start-up or on the command line,
    never an answer to a customer.
    """

    def __init__(self, problems: Iterable[str], *, source: str = "staff_access.toml") -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)


def default_staff_access_path() -> Path:
    """The staff-access policy packaged with Tutela."""
    return Path(__file__).with_name("default_staff_access.toml")


def load_staff_access(path: Path | None = None) -> StaffAccessPolicy:
    """Read and check the policy at `path` (None: the packaged default); `OSError` if it
    cannot be read, `StaffAccessPolicyError` if it is not a valid policy."""
    path = path or default_staff_access_path()
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StaffAccessPolicyError(["the file is not UTF-8 text"], source=path.name) from None
    return parse_staff_access(text, source=path.name)


def parse_staff_access(text: str, *, source: str = "staff_access.toml") -> StaffAccessPolicy:
    """Parse and check a policy; one `StaffAccessPolicyError` lists every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StaffAccessPolicyError([f"not valid TOML: {exc}"], source=source) from None
    checker = _Checker()
    policy = checker.policy(data, source=source)
    if checker.problems or policy is None:
        raise StaffAccessPolicyError(checker.problems, source=source)
    return policy


def _digest(data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _describe(value: object) -> str:
    """A TOML reader's name for a value's type; never the value itself."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "another kind of value"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def policy(self, data: dict[str, Any], *, source: str) -> StaffAccessPolicy | None:
        self.unknown(data, _TOP_KEYS + _TABLES, "at the top level")
        version = self.whole(data, "version", "version", least=1, most=1_000_000)
        operator = self.text(data, "operator", "operator")
        kept = self.whole(
            data,
            "access_records_kept_days",
            "access_records_kept_days",
            least=1,
            most=MAX_RECORD_DAYS,
        )
        zones = self.zones(data)
        purposes = self.purposes(data.get("purpose", []))
        roles = self.roles(data.get("role", []), purposes)
        if self.problems or version is None or operator is None or kept is None:
            return None
        return StaffAccessPolicy(
            version=version,
            operator=operator,
            records_kept=timedelta(days=kept),
            never_reviewable_zones=zones,
            purposes=purposes,
            roles=roles,
            source=source,
            sha256=_digest(data),
        )

    # -- pieces --

    def unknown(self, table: Mapping[str, Any], known: tuple[str, ...], place: str) -> None:
        for key in table:
            if key not in known:
                self.problems.append(
                    f"unknown key {key!r} {place}; expected one of {', '.join(known)}"
                )

    def whole(
        self, table: Mapping[str, Any], key: str, place: str, *, least: int, most: int
    ) -> int | None:
        if key not in table:
            self.problems.append(f"{place} is missing")
            return None
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            self.problems.append(f"{place} must be a whole number, not {_describe(value)}")
            return None
        if not least <= value <= most:
            self.problems.append(f"{place} must be from {least} to {most}")
            return None
        return value

    def text(self, table: Mapping[str, Any], key: str, place: str) -> str | None:
        value = table.get(key)
        if value is None:
            self.problems.append(f"{place} is missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{place} must be a non-empty string, not {_describe(value)}")
            return None
        return " ".join(value.split())

    def names(self, table: Mapping[str, Any], key: str, place: str) -> list[str] | None:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{place} must be an array of strings, not {_describe(value)}")
            return None
        return list(value)

    def tables(self, value: object, name: str) -> list[Mapping[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problems.append(f"{name} must be [[{name}]] tables, not {_describe(value)}")
            return []
        return value

    def zones(self, data: Mapping[str, Any]) -> tuple[CameraZone, ...]:
        named = self.names(data, "never_reviewable_zones", "never_reviewable_zones") or []
        zones: list[CameraZone] = []
        for zone in named:
            if zone not in CameraZone._value2member_map_:
                self.problems.append(
                    f"never_reviewable_zones: unknown zone {zone!r}; expected among "
                    + ", ".join(z.value for z in CameraZone)
                )
            elif CameraZone(zone) not in zones:
                zones.append(CameraZone(zone))
        missing = sorted(z.value for z in ALWAYS_PRIVATE_ZONES - set(zones))
        if missing:
            self.problems.append(
                "never_reviewable_zones must include "
                + ", ".join(missing)
                + ": bedroom and bathroom cameras are never reviewable"
            )
        return tuple(zones)

    def purposes(self, value: object) -> Mapping[AccessPurpose, PurposeRule]:
        found: dict[AccessPurpose, PurposeRule] = {}
        for index, raw in enumerate(self.tables(value, "purpose"), start=1):
            place = f"[[purpose]] number {index}"
            self.unknown(raw, _PURPOSE_KEYS, f"in {place}")
            ident = self.text(raw, "id", f"{place}: id")
            if ident is None:
                continue
            place = f"[[purpose]] {ident!r}"
            if ident not in AccessPurpose._value2member_map_:
                self.problems.append(
                    f"{place}: unknown purpose; expected one of "
                    + ", ".join(p.value for p in AccessPurpose)
                )
                continue
            purpose = AccessPurpose(ident)
            if purpose in found:
                self.problems.append(f"{place} is described twice")
                continue
            title = self.text(raw, "title", f"{place}: title")
            condition = self.text(raw, "condition", f"{place}: condition")
            requires = self.conditions(raw, purpose, place)
            review = self.review(raw, requires, place)
            if title is None or condition is None or requires is None:
                continue
            found[purpose] = PurposeRule(
                purpose=purpose,
                title=title,
                condition=condition,
                requires=requires,
                review_within=review,
            )
        return MappingProxyType(found)

    def conditions(
        self, raw: Mapping[str, Any], purpose: AccessPurpose, place: str
    ) -> frozenset[Condition] | None:
        named = self.names(raw, "requires", f"{place}: requires")
        if named is None:
            return None
        unknown = [n for n in named if n not in Condition._value2member_map_]
        if unknown:
            self.problems.append(
                f"{place}: unknown condition {unknown[0]!r}; expected among "
                + ", ".join(c.value for c in Condition)
            )
            return None
        requires = frozenset(Condition(n) for n in named)
        missing = sorted(c.value for c in REQUIRED_CONDITIONS[purpose] - requires)
        if missing:
            self.problems.append(
                f"{place}: requires must include {', '.join(missing)} (R2: no access "
                "without the condition this purpose rests on)"
            )
            return None
        return requires

    def review(
        self, raw: Mapping[str, Any], requires: frozenset[Condition] | None, place: str
    ) -> timedelta | None:
        after = requires is not None and Condition.AFTER_REVIEW in requires
        if "review_within_days" not in raw:
            if after:
                self.problems.append(
                    f"{place}: review_within_days is missing: an after-the-fact review "
                    "has a deadline"
                )
            return None
        if not after:
            self.problems.append(
                f"{place}: review_within_days is only for a purpose that requires after_review"
            )
            return None
        days = self.whole(
            raw,
            "review_within_days",
            f"{place}: review_within_days",
            least=1,
            most=MAX_REVIEW_DAYS,
        )
        return timedelta(days=days) if days is not None else None

    def roles(
        self, value: object, purposes: Mapping[AccessPurpose, PurposeRule]
    ) -> Mapping[StaffRole, RoleRule]:
        found: dict[StaffRole, RoleRule] = {}
        named: set[str] = set()
        for index, raw in enumerate(self.tables(value, "role"), start=1):
            place = f"[[role]] number {index}"
            self.unknown(raw, _ROLE_KEYS, f"in {place}")
            ident = self.text(raw, "id", f"{place}: id")
            if ident is None:
                continue
            named.add(ident)
            place = f"[[role]] {ident!r}"
            if ident not in StaffRole._value2member_map_:
                self.problems.append(
                    f"{place}: unknown role; expected one of "
                    + ", ".join(r.value for r in StaffRole)
                )
                continue
            role = StaffRole(ident)
            if role in found:
                self.problems.append(f"{place} is described twice")
                continue
            title = self.text(raw, "title", f"{place}: title")
            duties = self.text(raw, "duties", f"{place}: duties")
            kinds = self.kinds(raw, place)
            allowed = self.allowed(raw, place, purposes)
            if title is None or duties is None or kinds is None or allowed is None:
                continue
            if bool(kinds) != bool(allowed):
                self.problems.append(
                    f"{place}: data and purposes go together: a role that can see data "
                    "needs a purpose, and a purpose needs data to see"
                )
                continue
            if kinds and role not in MEDIA_ROLES:
                self.problems.append(
                    f"{place}: only roles that must sign in with a passkey or security key "
                    "(" + ", ".join(sorted(r.value for r in MEDIA_ROLES)) + ") may see "
                    "customer data (R4)"
                )
                continue
            found[role] = RoleRule(
                role=role, title=title, duties=duties, data=kinds, purposes=allowed
            )
        for role in StaffRole:
            if role.value not in named:
                self.problems.append(
                    f"no [[role]] for {role.value!r}: the notice names every role at the "
                    "operator, including those that see nothing"
                )
        return MappingProxyType(found)

    def kinds(self, raw: Mapping[str, Any], place: str) -> tuple[ItemKind, ...] | None:
        named = self.names(raw, "data", f"{place}: data")
        if named is None:
            return None
        unknown = [n for n in named if n not in ItemKind._value2member_map_]
        if unknown:
            self.problems.append(
                f"{place}: unknown kind of data {unknown[0]!r}; expected among "
                + ", ".join(k.value for k in ItemKind)
            )
            return None
        return tuple(dict.fromkeys(ItemKind(n) for n in named))

    def allowed(
        self, raw: Mapping[str, Any], place: str, purposes: Mapping[AccessPurpose, PurposeRule]
    ) -> tuple[AccessPurpose, ...] | None:
        named = self.names(raw, "purposes", f"{place}: purposes")
        if named is None:
            return None
        for name in named:
            if name not in AccessPurpose._value2member_map_:
                self.problems.append(f"{place}: unknown purpose {name!r}")
                return None
            if AccessPurpose(name) not in purposes:
                self.problems.append(
                    f"{place}: purpose {name!r} has no [[purpose]] saying when it applies"
                )
                return None
        return tuple(dict.fromkeys(AccessPurpose(n) for n in named))
