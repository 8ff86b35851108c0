"""Media uploads at their edges: no body read before the device token is checked (R6), and
a client that leaves mid-body is logged as such, not as a server error.

Driven as raw ASGI calls, so the test sees every `receive()` the server makes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest

from tests.factories import device_token, past, wav_bytes
from tests.functional.conftest import stored
from tests.raw_asgi import media_upload_scope, run_apart
from tutela.app import create_app
from tutela.container import Container
from tutela.households.service import CreatedHome

CHUNK = 64 * 1024


@dataclass
class Upload:
    """One raw upload: the body offered in chunks, and how much of it the server took."""

    chunks: list[bytes]
    disconnect_after: int | None = None
    """Chunks sent before the client goes away (None: it stays)."""
    taken: int = 0
    sent: list[dict[str, object]] = field(default_factory=list)

    async def receive(self) -> dict[str, object]:
        if self.disconnect_after is not None and self.taken >= self.disconnect_after:
            return {"type": "http.disconnect"}
        if self.taken >= len(self.chunks):
            await asyncio.sleep(3600)  # a client that keeps the connection open
        piece = self.chunks[self.taken]
        self.taken += 1
        return {"type": "http.request", "body": piece, "more_body": self.taken < len(self.chunks)}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return int(start["status"])  # type: ignore[call-overload]


def run_upload(
    container: Container, home: CreatedHome, upload: Upload, token: str, *, declared: bool = True
) -> None:
    app = create_app(container=container)
    length = sum(len(c) for c in upload.chunks)
    query = urlencode(
        {"profile_id": str(home.child_profiles[0]), "kind": "voice", "captured_at": past(container)}
    )
    scope = media_upload_scope(
        query, token, content_length=str(length).encode() if declared else None
    )
    call = app(scope, upload.receive, upload.send)  # type: ignore[arg-type]
    run_apart(asyncio.wait_for(call, 60))


def chunks_of(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


@pytest.mark.parametrize("size", [200 * 1024, 1536 * 1024], ids=["small", "streamed"])
@pytest.mark.parametrize("token", ["tdv_not-a-real-token", "garbage"])
def test_a_bad_device_token_is_refused_before_any_of_the_body_is_read(
    container: Container, home: CreatedHome, size: int, token: str
) -> None:
    """R6: the 401 comes before the server takes in one byte of the upload."""
    upload = Upload(chunks_of(b"\0" * size))
    run_upload(container, home, upload, token)
    assert upload.status == 401
    assert upload.taken == 0


def test_a_good_token_still_uploads_a_small_body_whole(
    container: Container, home: CreatedHome
) -> None:
    upload = Upload(chunks_of(wav_bytes(2.0)))
    run_upload(container, home, upload, device_token(home, container, "voice"))
    assert upload.status == 201
    assert upload.taken == len(upload.chunks)


@pytest.mark.parametrize("seconds", [40.0, 100.0], ids=["small", "streamed"])
def test_a_client_leaving_mid_body_is_logged_as_a_disconnect_not_an_error(
    container: Container, home: CreatedHome, seconds: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a 500, no error record, no traceback; and nothing of the upload is kept."""
    before = stored(container)
    upload = Upload(chunks_of(wav_bytes(seconds)), disconnect_after=2)
    with caplog.at_level(logging.INFO):
        run_upload(container, home, upload, device_token(home, container, "voice"))
    messages = [r.getMessage() for r in caplog.records]
    assert all(r.levelno < logging.WARNING for r in caplog.records), messages
    assert all(r.exc_info is None for r in caplog.records)
    assert not any(" 500 " in m or "Traceback" in m for m in messages), messages
    assert any("client disconnected" in m for m in messages), messages
    assert any("POST /api/v1/ingest/media 499" in m for m in messages), messages
    assert stored(container) == before


def test_a_stream_cut_off_for_its_size_is_logged_as_a_413_not_a_disconnect(
    container: Container, home: CreatedHome, caplog: pytest.LogCaptureFixture
) -> None:
    before = stored(container)
    limit = container.settings.max_upload_bytes
    upload = Upload(chunks_of(wav_bytes(0.1) + bytes(limit + CHUNK)))
    with caplog.at_level(logging.INFO):
        run_upload(container, home, upload, device_token(home, container, "voice"), declared=False)
    messages = [r.getMessage() for r in caplog.records]
    assert upload.status == 413
    assert any("POST /api/v1/ingest/media 413" in m for m in messages), messages
    assert not any("disconnected" in m or " 499 " in m for m in messages), messages
    assert stored(container) == before
