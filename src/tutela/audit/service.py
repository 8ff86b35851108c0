"""Appending audit events. The caller's transaction carries the event with the action."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from tutela.audit.models import AuditEvent
from tutela.core.ids import uuid7


class AuditTag(StrEnum):
    """`part:subject:action` tags of every event Tutela records."""

    ACCOUNT_LOGIN_SUCCESS = "identity:login:success"
    ACCOUNT_LOGIN_FAILURE = "identity:login:failure"
    ACCOUNT_LOGOUT = "identity:session:end"
    SESSIONS_ENDED = "identity:sessions:end-all"
    SESSIONS_DEMOTED = "identity:sessions:demote"
    LOGIN_THROTTLED = "identity:login:throttled"
    SECOND_FACTOR_REQUIRED = "identity:login:second-factor-required"
    SECOND_FACTOR_FAILURE = "identity:factor:failure"
    SIGN_IN_LINK_SENT = "identity:login:link-sent"
    NEW_DEVICE_SIGN_IN = "identity:login:new-device"
    KNOWN_DEVICE_FORGOTTEN = "identity:device:forget"
    FACTOR_ADDED = "identity:factor:add"
    FACTOR_REMOVED = "identity:factor:remove"
    RECOVERY_CODES_ISSUED = "identity:recovery-codes:issue"
    RECOVERY_CODE_USED = "identity:recovery-code:use"
    PASSWORD_CHANGED = "identity:password:change"  # noqa: S105 (a tag)
    RECOVERY_REQUESTED = "identity:recovery:request"
    RECOVERY_LINK_SENT = "identity:recovery:link-sent"
    RECOVERY_DELAYED = "identity:recovery:delay"
    RECOVERY_CANCELLED = "identity:recovery:cancel"
    RECOVERY_COMPLETED = "identity:recovery:complete"
    PASSWORD_BREACHED = "identity:password:breached"  # noqa: S105 (a tag)
    STEP_UP = "identity:step-up"
    DEFENDED_MODE_ENTERED = "identity:defence:enter"
    STAFF_ADDED = "identity:staff:add"
    ACCOUNT_CREATED = "households:account:create"
    EMAIL_INDEX_CONFLICT = "households:email-index:conflict"
    PROFILE_CREATED = "households:profile:create"
    DEVICE_REGISTERED = "households:device:register"
    DEVICE_REVOKED = "households:device:revoke"
    MASTER_KEY_ROTATED = "vault:master-key:rotate"
    KEY_EPOCH_ROTATED = "vault:key-epoch:rotate"
    KEY_EPOCH_OVERDUE = "vault:key-epoch:overdue"
    ERASURE_REQUESTED = "erasure:request:create"
    ERASURE_COMPLETED = "erasure:request:complete"
    ERASURE_FAILED = "erasure:request:fail"
    ERASURE_RETRIED = "erasure:request:retry"
    ERASURE_DEADLINE_WARNING = "erasure:request:deadline-warning"
    ERASURE_COPIES_UNREADABLE = "erasure:request:copies-unreadable"
    ERASURE_NOTICE_UNDELIVERED = "erasure:notice:undelivered"
    BACKUP_RESTORE_CHECKED = "erasure:backup:restore-check"
    EXPORT_REQUESTED = "exports:export:request"
    EXPORT_READY = "exports:export:ready"
    EXPORT_DOWNLOADED = "exports:export:download"
    EXPORT_EXPIRED = "exports:export:expire"
    AUTO_DELETE_SET = "retention:auto-delete:set"
    INACTIVE_CHILD_IDENTIFIED = "retention:inactive-child:identify"
    INACTIVE_CHILD_KEPT = "retention:inactive-child:keep"
    INACTIVE_CHILD_REACTIVATED = "retention:inactive-child:reactivate"
    RETENTION_SWEPT = "retention:sweep"
    CONSENT_GRANTED = "consent:purpose:grant"
    CONSENT_WITHDRAWN = "consent:purpose:withdraw"
    COLLECTION_REFUSED = "consent:collection:refuse"
    PARENTAL_CONSENT_VERIFIED = "consent:parental:verify"
    PARENTAL_CONSENT_FAILED = "consent:parental:fail"
    PARENTAL_CONSENT_ASKED = "consent:parental:ask"


def record(
    session: Session,
    *,
    tag: AuditTag,
    actor: str,
    now: datetime,
    household_id: uuid.UUID | None = None,
    subject: str | None = None,
) -> None:
    """Add an event to `session`; it commits with the action it records, or not at all."""
    session.add(
        AuditEvent(
            id=uuid7(), at=now, tag=tag, actor=actor, household_id=household_id, subject=subject
        )
    )
