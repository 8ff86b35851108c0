"""Media uploads driven as raw ASGI calls, so a test sees every `receive()` the server
makes and can send a body that disagrees with its Content-Length."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def media_upload_scope(
    query: str, token: str, *, content_length: bytes | None
) -> dict[str, object]:
    """The scope of `POST /api/v1/ingest/media` with a device token, declaring
    `content_length` (None: no Content-Length header)."""
    declared = [(b"content-length", content_length)] if content_length is not None else []
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/ingest/media",
        "raw_path": b"/api/v1/ingest/media",
        "root_path": "",
        "query_string": query.encode(),
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"audio/wav"),
            *declared,
        ],
    }


def run_apart(call: Coroutine[Any, Any, Any]) -> None:
    """Run `call` on an event loop of its own thread: the browser tests may leave an event
    loop on this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, call).result()
