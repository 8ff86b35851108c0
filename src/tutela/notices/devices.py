"""A short, safe description of a sign-in's device, from its User-Agent, for notices.

The User-Agent is whatever the client sent: in a security email it could carry a link, a
fake instruction ("call this number") or an HTML lure. Notices therefore never show it:
they show a browser family and an operating system picked from allow-lists, or a fixed
phrase (OWASP, "Injection" and email content spoofing; S4 notices the owner must trust).
"""

from __future__ import annotations

import re
from typing import Final

UNKNOWN_DEVICE: Final = "an unrecognised browser or app"
MAX_LENGTH: Final = 60

# (token in the User-Agent, name shown), the first match wins: the order matters
# because Edge and Opera also say "Chrome", Chrome also says "Safari".
_BROWSERS: Final = (
    ("edg/", "Edge"),
    ("edge/", "Edge"),
    ("opr/", "Opera"),
    ("opera", "Opera"),
    ("samsungbrowser/", "Samsung Internet"),
    ("vivaldi/", "Vivaldi"),
    ("firefox/", "Firefox"),
    ("fxios/", "Firefox"),
    ("crios/", "Chrome"),
    ("chromium/", "Chromium"),
    ("chrome/", "Chrome"),
    ("safari/", "Safari"),
    ("curl/", "curl"),
    ("python-httpx/", "a Python program"),
    ("python-requests/", "a Python program"),
    ("okhttp/", "an Android app"),
    ("tutela", "the Tutela app"),
)
_SYSTEMS: Final = (
    ("iphone", "iOS"),
    ("ipad", "iPadOS"),
    ("android", "Android"),
    ("cros", "ChromeOS"),
    ("windows", "Windows"),
    ("mac os x", "macOS"),
    ("macintosh", "macOS"),
    ("linux", "Linux"),
)
# A description made here, read back (notices re-render it): it is kept as it is.
_ALREADY: Final = re.compile(r"^[A-Za-z][A-Za-z ]{0,40}( on [A-Za-z]{1,12})?$")
_SHOWN: Final = frozenset(name for _, name in _BROWSERS) | {UNKNOWN_DEVICE}
_SYSTEM_NAMES: Final = frozenset(name for _, name in _SYSTEMS)


def describe_device(user_agent: str) -> str:
    """ "Firefox on Windows", "Safari on iOS", "curl", or `UNKNOWN_DEVICE`: never UA text.

    Every word of the answer comes from the lists above, so it is printable ASCII, one
    line, at most `MAX_LENGTH` characters and needs no escaping anywhere.
    """
    if _is_description(user_agent):
        return user_agent
    text = user_agent[:512].lower()
    browser = next((name for token, name in _BROWSERS if token in text), None)
    system = next((name for token, name in _SYSTEMS if token in text), None)
    if browser is None:
        return UNKNOWN_DEVICE if system is None else f"a browser on {system}"
    described = f"{browser} on {system}" if system else browser
    return described[:MAX_LENGTH]


def _is_description(value: str) -> bool:
    if not _ALREADY.match(value):
        return False
    name, _, system = value.partition(" on ")
    if name == "a browser":
        return system in _SYSTEM_NAMES
    return name in _SHOWN and (not system or system in _SYSTEM_NAMES)
