"""The one exception tree. `app.py` maps each to an RFC 9457 problem+json response.

Every error has a stable machine `code`, an HTTP `status` and a human sentence
(`detail`). The sentence never carries personal data, secrets or stack traces.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TutelaError(Exception):
    """Base of every error Tutela raises on purpose."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    # Set when the refused action still queued a notice (a sign-in link, an alert): the
    # web layer then delivers the outbox with the answer.
    notices_queued: bool = False

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra


class InvalidInput(TutelaError):
    status = 422
    code = "invalid_input"
    title = "Invalid input"


class NotAuthenticated(TutelaError):
    status = 401
    code = "not_authenticated"
    title = "Not signed in"


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    title = "Sign-in failed"


class InvalidDeviceToken(NotAuthenticated):
    code = "invalid_device_token"
    title = "Device not recognised"


class Forbidden(TutelaError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class ConsentRefused(Forbidden):
    """An upload its subject's consent does not allow; `code` says why (C3, C6)."""

    code = "collection_refused"
    title = "Consent does not allow this upload"


class NotFound(TutelaError):
    """Also the answer for another household's ids: existence never leaks."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(TutelaError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(TutelaError):
    """A single-use link that was used, or has expired."""

    status = 410
    code = "gone"
    title = "No longer valid"


class PayloadTooLarge(TutelaError):
    status = 413
    code = "payload_too_large"
    title = "Upload too large"


class UnsupportedMedia(TutelaError):
    status = 415
    code = "unsupported_media"
    title = "Unsupported media"


class RangeNotSatisfiable(TutelaError):
    status = 416
    code = "range_not_satisfiable"
    title = "Range not satisfiable"


class KeyUnavailable(TutelaError):
    """A key was destroyed or its master key is missing: the data cannot be read."""

    status = 410
    code = "key_unavailable"
    title = "Data no longer readable"


class IntegrityFailure(TutelaError):
    """Ciphertext failed authentication: tampered, truncated or bound to another id."""

    status = 500
    code = "integrity_failure"
    title = "Stored data failed its integrity check"


class ConfigurationError(TutelaError):
    status = 500
    code = "configuration_error"
    title = "Tutela is not configured correctly"


class WeakPassword(InvalidInput):
    """A new password broke a NIST SP 800-63B rule (S1); `code` names which one."""

    code = "weak_password"
    title = "Password not accepted"


class TooManyAttempts(TutelaError):
    """Sign-in attempts from this source are slowed down; `retry_after` is in seconds."""

    status = 429
    code = "too_many_attempts"
    title = "Too many attempts"


class SignInBusy(TooManyAttempts):
    """Password hashing is at its budget or its slots are taken: try again shortly.

    Refused before any hash is computed; the same answer whether or not the account
    exists. `retry_after` is in seconds.
    """

    code = "sign_in_busy"
    title = "Sign-in busy"


class SecondFactorRequired(TutelaError):
    """The password was right; a second factor or an emailed link must follow."""

    status = 401
    code = "second_factor_required"
    title = "Second factor required"


class StepUpRequired(TutelaError):
    """A dangerous action needs a fresh second factor in this session (C7)."""

    status = 403
    code = "step_up_required"
    title = "Confirm it is you"


class ServiceUnavailable(TutelaError):
    status = 503
    code = "service_unavailable"
    title = "Temporarily unavailable"
