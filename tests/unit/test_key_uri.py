"""The authenticator's key URI, its QR code and the grouped key (R4, R5: factors people set up)."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import segno

from tutela.identity.key_uri import base32_secret, grouped_key, key_uri, qr_svg

SEED = b"12345678901234567890"  # RFC 6238 Appendix B's SHA-1 seed


def _uri(account: str = "ana@example.com", issuer: str = "Tutela") -> str:
    return key_uri(secret=SEED, account_name=account, issuer=issuer, digits=6, period=30)


def test_the_uri_follows_the_key_uri_format() -> None:
    uri = _uri()
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Tutela:ana%40example.com"
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"],
        "issuer": ["Tutela"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }
    assert base64.b32decode(query["secret"][0]) == SEED


def test_an_authenticator_app_reading_the_uri_makes_the_same_codes() -> None:
    parsed = pyotp.parse_uri(_uri())
    assert isinstance(parsed, pyotp.TOTP)
    # RFC 6238 Appendix B, 6 digits of T=59 (94287082) and T=1111111109 (07081804).
    assert parsed.at(59) == "287082"
    assert parsed.at(1111111109) == "081804"
    assert parsed.issuer == "Tutela"
    assert parsed.name == "ana@example.com"


def test_label_parts_are_percent_encoded_so_they_cannot_split_or_inject() -> None:
    uri = _uri(account="a:b c&secret=AAAA@x.test", issuer="Acme & Co")
    parts = urlsplit(uri)
    issuer, _, account = parts.path.lstrip("/").partition(":")
    assert unquote(issuer) == "Acme & Co"
    assert unquote(account) == "a:b c&secret=AAAA@x.test"
    assert " " not in uri and "@" not in uri
    query = parse_qs(parts.query)
    assert query["secret"] == ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"]  # not the account's
    assert query["issuer"] == ["Acme & Co"]


def test_secret_is_base32_without_padding() -> None:
    assert base32_secret(b"\x00" * 10) == "AAAAAAAAAAAAAAAA"
    assert base32_secret(b"abc") == "MFRGG"  # b32 would be "MFRGG==="
    odd = key_uri(secret=b"abc", account_name="a", issuer="T", digits=6, period=30)
    assert parse_qs(urlsplit(odd).query)["secret"] == ["MFRGG"]


def test_grouped_key_is_groups_of_four() -> None:
    assert grouped_key("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") == (
        "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
    )
    assert grouped_key("mfrgg===") == "MFRG G"
    assert grouped_key(grouped_key("ABCDEFGH")) == "ABCD EFGH"


def _drawn_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules the SVG path draws, as (row, column) including the quiet zone."""
    (path,) = re.findall(r'<path stroke="#000" d="([^"]+)"', svg)
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            for i in range(int(float(a))):
                dark.add((int(y), int(x) + i))
            x += float(a)
    return dark


def test_qr_svg_draws_the_code_of_the_uri() -> None:
    uri = _uri()
    svg = qr_svg(uri)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    expected = segno.make(uri, error="m", micro=False)
    border = 4
    want = {
        (r + border, c + border)
        for r, row in enumerate(expected.matrix)
        for c, bit in enumerate(row)
        if bit
    }
    assert _drawn_modules(svg) == want
    assert segno.make(uri, error="m").designator.endswith("M")


def test_qr_svg_never_writes_the_uri_as_text() -> None:
    nasty = _uri(account='<script>alert(1)</script>"@x.test')
    svg = qr_svg(nasty)
    assert "<script" not in svg and "alert" not in svg and "x.test" not in svg
    assert set(re.findall(r"<(\w+)", svg)) <= {"svg", "title", "g", "path"}
