"""What an authenticator app reads: the `otpauth://` key URI, its QR code, the key to type.

The URI follows Google Authenticator's Key Uri Format (the de facto standard every TOTP
app reads): `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…`,
with the issuer and account name percent-encoded (RFC 3986) and the secret in base32
(RFC 4648) without padding. Making set-up a scan rather than 32 typed characters is what
keeps people enrolling a second factor (R4, R5).
"""

from __future__ import annotations

import base64
from typing import Final
from urllib.parse import quote

import segno

# The QR code's error correction: "M" recovers 15% of a damaged or badly lit code.
QR_ERROR: Final = "m"
QR_SCALE: Final = 4
# The quiet zone ISO/IEC 18004 requires around a QR code, in modules.
QR_BORDER: Final = 4
# The accessible name of the image: fixed text, never the account's.
QR_TITLE: Final = "QR code of the authenticator key"


def key_uri(
    *,
    secret: bytes,
    account_name: str,
    issuer: str,
    digits: int,
    period: int,
    algorithm: str = "SHA1",
) -> str:
    """The `otpauth://totp/` URI of a TOTP key, as authenticator apps import it.

    The label is `issuer:account`, each part percent-encoded (a colon or an "@" in an
    account name cannot split it); the issuer is repeated as a parameter, which apps
    prefer over the label's prefix. The secret is base32 without "=" padding.
    """
    label = f"{quote(issuer, safe='')}:{quote(account_name, safe='')}"
    query = "&".join(
        [
            f"secret={base32_secret(secret)}",
            f"issuer={quote(issuer, safe='')}",
            f"algorithm={algorithm.upper()}",
            f"digits={digits}",
            f"period={period}",
        ]
    )
    return f"otpauth://totp/{label}?{query}"


def base32_secret(secret: bytes) -> str:
    """The secret as authenticator apps take it: upper-case base32 without padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def grouped_key(secret: str) -> str:
    """A base32 key in groups of four ("ABCD EFGH …") so that it can be typed by hand.

    Authenticator apps ignore the spaces; padding, if any, is dropped.
    """
    cleaned = "".join(secret.split()).rstrip("=").upper()
    return " ".join(cleaned[i : i + 4] for i in range(0, len(cleaned), 4))


def qr_svg(uri: str) -> str:
    """An inline SVG QR code of `uri`, safe to embed in HTML as it is.

    Only segno's drawing is in it (a path of modules and a fixed title): the URI is
    encoded as modules, never written out as text, so nothing in it needs escaping.
    """
    code = segno.make(uri, error=QR_ERROR, micro=False)
    return str(
        code.svg_inline(
            scale=QR_SCALE,
            border=QR_BORDER,
            # A viewBox instead of a fixed size: the page sets the size and the whole
            # code, quiet zone included, scales into it.
            omitsize=True,
            title=QR_TITLE,
            svgclass="qr",
            lineclass=None,
            dark="#000",
            light="#fff",
        )
    )
