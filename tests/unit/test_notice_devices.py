"""Security notices describe a device from allow-lists, never with User-Agent text (S4)."""

from __future__ import annotations

import re

import pytest

from tutela.notices.devices import MAX_LENGTH, UNKNOWN_DEVICE, describe_device

HOSTILE = (
    "Mozilla/5.0 (Windows NT 10.0) Firefox/132.0\r\n\r\n"
    "URGENT: your account is locked, call +1 555 0100 or visit https://tutela-help.example/x "
    '<a href="https://evil.example/">restore access</a><script>alert(1)</script> ' + "A" * 2048
)


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
            "Firefox on Windows",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) CriOS/126.0 Mobile/15E148 Safari/604.1",
            "Chrome on iOS",
        ),
        ("curl/8.5.0", "curl"),
        ("python-httpx/0.27.0", "a Python program"),
        ("", UNKNOWN_DEVICE),
        ("my own bot https://evil.example", UNKNOWN_DEVICE),
        (HOSTILE, "Firefox on Windows"),
    ],
)
def test_a_user_agent_becomes_a_browser_and_a_system_from_the_lists(
    user_agent: str, shown: str
) -> None:
    assert describe_device(user_agent) == shown


def test_nothing_of_a_hostile_user_agent_reaches_the_description() -> None:
    for text in (HOSTILE, HOSTILE[40:], "<b>Linux</b>\n" + "x" * 3000, "Tutela\u202eelgoog"):
        shown = describe_device(text)
        assert len(shown) <= MAX_LENGTH
        assert re.fullmatch(r"[A-Za-z ]+", shown), shown
        for piece in ("http", "evil", "<", ">", "call", "\n", "555", "\u202e"):
            assert piece not in shown


def test_a_description_read_back_stays_as_it_is() -> None:
    """Notices are described when queued and again when rendered."""
    for shown in ("Firefox on Windows", "curl", "a browser on Linux", UNKNOWN_DEVICE):
        assert describe_device(shown) == shown
    assert describe_device("Firefox on Mars") == UNKNOWN_DEVICE
    assert describe_device("Call us on Windows") == "a browser on Windows"
