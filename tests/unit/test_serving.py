"""Where `tutela serve` listens and what it warns about at start-up (R4: passkeys work)."""

from __future__ import annotations

import pytest

from tutela.serving import listen_addresses, startup_warnings
from tutela.settings import Settings


def test_localhost_means_both_loopback_addresses() -> None:
    assert listen_addresses("localhost") == ["127.0.0.1", "::1"]
    assert listen_addresses("0.0.0.0") == ["0.0.0.0"]  # noqa: S104
    assert listen_addresses("127.0.0.1, [::1], localhost") == ["127.0.0.1", "::1"]
    with pytest.raises(ValueError, match="No address"):
        listen_addresses(" , ")


@pytest.mark.parametrize(
    ("public_url", "rp_id", "warned"),
    [
        ("http://localhost:8000", None, False),
        ("http://127.0.0.1:8000", None, True),
        ("http://[::1]:8000", None, True),
        ("https://tutela.example", None, False),
        ("https://tutela.example", "10.0.0.5", True),
    ],
)
def test_an_ip_address_as_relying_party_id_is_warned_about(
    public_url: str, rp_id: str | None, warned: bool
) -> None:
    settings = Settings(public_url=public_url, webauthn_rp_id=rp_id)
    found = [w for w in startup_warnings(settings, port=8000) if "relying-party id" in w]
    assert bool(found) is warned


def test_a_port_other_than_the_public_urls_is_warned_about() -> None:
    settings = Settings(public_url="http://localhost:8000")
    assert startup_warnings(settings, port=8000) == []
    (warning,) = startup_warnings(settings, port=9000)
    assert "port 9000" in warning
