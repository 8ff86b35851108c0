"""Pure rules of the households part: who may see whose data, what a device may be."""

from __future__ import annotations

import uuid
from datetime import date

from tutela.core.errors import InvalidInput
from tutela.households.models import CameraZone, DeviceKind


def normalise_email(email: str) -> str:
    """The form an email is indexed under: trimmed and case-folded."""
    return email.strip().casefold()


def check_email(email: str) -> str:
    normal = normalise_email(email)
    local, _, domain = normal.partition("@")
    if not local or "." not in domain or len(normal) > 254 or any(c.isspace() for c in normal):
        raise InvalidInput("That is not an email address.", code="invalid_email")
    return normal


def visible_profiles(
    *, own_profile_id: uuid.UUID, guarded_profile_ids: set[uuid.UUID]
) -> set[uuid.UUID]:
    """An account sees its own profile and the children it is a guardian of (COPPA C6).

    Other adults of the same household are not visible: living together is not consent.
    """
    return {own_profile_id, *guarded_profile_ids}


def check_device_label(label: str) -> str:
    """Labels are stored in plaintext: short, printable, and meant for rooms, not names."""
    label = label.strip()
    if not label or len(label) > 80 or not label.isprintable():
        raise InvalidInput("A device label is 1 to 80 printable characters.", code="invalid_label")
    return label


def check_device(kind: str, zone: str | None) -> tuple[DeviceKind, CameraZone | None]:
    """A camera must say which zone it watches (bedrooms and bathrooms matter); nothing else may."""
    try:
        device_kind = DeviceKind(kind)
    except ValueError as exc:
        raise InvalidInput("Unknown device kind.", code="invalid_device_kind") from exc
    if device_kind is DeviceKind.CAMERA:
        if zone is None:
            raise InvalidInput("A camera needs a zone.", code="camera_zone_required")
        try:
            return device_kind, CameraZone(zone)
        except ValueError as exc:
            raise InvalidInput("Unknown camera zone.", code="invalid_camera_zone") from exc
    if zone is not None:
        raise InvalidInput("Only cameras have a zone.", code="zone_not_allowed")
    return device_kind, None


def check_child_birth_date(birth_date: date, today: date) -> date:
    if birth_date > today:
        raise InvalidInput("A birth date cannot be in the future.", code="invalid_birth_date")
    if (today - birth_date).days > 18 * 366:
        raise InvalidInput("A child profile is for someone under 18.", code="not_a_child")
    return birth_date
