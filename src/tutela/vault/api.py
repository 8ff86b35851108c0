"""Routes of the vault: device ingestion and a customer's items (thin: parse, call, answer)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
import anyio.from_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from tutela.core.errors import InvalidInput
from tutela.deps import AppContainer, CurrentDevice, DbSession, MediaReader, current_device
from tutela.vault import service
from tutela.vault.models import ItemKind
from tutela.vault.schemas import (
    ItemDetail,
    ItemOut,
    ItemPage,
    LocationBatchIn,
    TranscriptIn,
)

SMALL_BODY = 1024 * 1024
ingest = APIRouter(prefix="/api/v1/ingest", tags=["ingestion"])
items = APIRouter(prefix="/api/v1/items", tags=["items"])


def _sync_body(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull the request body from the event loop into the worker thread, piece by piece."""

    async def _next() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    while (piece := anyio.from_thread.run(_next)) is not None:
        if piece:
            yield piece


async def _read_declared(request: Request, declared: int) -> bytes:
    """The whole body, refused as soon as it runs past its declared length."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > declared:
            raise InvalidInput(
                "The body is longer than its Content-Length.", code="length_mismatch"
            )
    return bytes(body)


@ingest.post("/media", status_code=201, response_model=ItemOut)
async def upload_media(
    request: Request,
    container: AppContainer,
    profile_id: Annotated[uuid.UUID, Query()],
    kind: Annotated[str, Query(max_length=16)],
    captured_at: Annotated[AwareDatetime, Query()],
    source_item_id: Annotated[uuid.UUID | None, Query()] = None,
    ephemeral: Annotated[bool, Query()] = False,
    content_type: Annotated[str, Header()] = "",
    content_length: Annotated[int | None, Header()] = None,
) -> ItemOut:
    """Upload a voice recording, video clip, snapshot or thumbnail as the raw request body.

    The device check, the upload's checks and the sealing all run in one worker thread,
    which pulls the body from the event loop piece by piece as it seals it. Not one byte
    of the body is read before the device token is found valid (R6) and the subject's
    consent is found to allow it (C3, C6): a client without either cannot make the server
    take in up to a megabyte for nothing.

    `ephemeral=true` marks a voice recording used only in place of typed words (C11): it
    is checked as usual, read to its end and dropped; only its row is kept, briefly.
    """

    def _body() -> bytes | Iterator[bytes]:
        if content_length is not None and content_length <= SMALL_BODY:
            # Small bodies (most voice clips) are read whole in one hop to the loop.
            return anyio.from_thread.run(_read_declared, request, content_length)
        return _sync_body(request.stream().__aiter__())

    def _ingest() -> ItemOut:
        with container.stores.session() as session:
            device = current_device(request, session, container)
            item = service.ingest_media(
                session,
                container.vault,
                consent=container.consent,
                device=device,
                profile_id=profile_id,
                kind=kind,
                declared_type=content_type,
                captured_at=captured_at,
                body=_body,
                limits=container.limits,
                now=container.clock.now(),
                source_item_id=source_item_id,
                declared_length=content_length,
                ephemeral=ephemeral,
            )
            return ItemOut.of(item)

    return await anyio.to_thread.run_sync(_ingest)


@ingest.post("/transcripts", status_code=201, response_model=ItemOut)
def upload_transcript(
    payload: TranscriptIn, device: CurrentDevice, session: DbSession, container: AppContainer
) -> ItemOut:
    item = service.ingest_transcript(
        session,
        container.vault,
        consent=container.consent,
        device=device,
        source_item_id=payload.source_item_id,
        text=payload.text,
        language=payload.language,
        now=container.clock.now(),
    )
    return ItemOut.of(item)


@ingest.post("/locations", status_code=201, response_model=ItemOut)
def upload_locations(
    payload: LocationBatchIn, device: CurrentDevice, session: DbSession, container: AppContainer
) -> ItemOut:
    item = service.ingest_locations(
        session,
        container.vault,
        consent=container.consent,
        device=device,
        profile_id=payload.profile_id,
        points=[
            service.LocationPoint(
                latitude=p.latitude,
                longitude=p.longitude,
                captured_at=p.captured_at,
                accuracy_m=p.accuracy_m,
            )
            for p in payload.points
        ],
        limits=container.limits,
        now=container.clock.now(),
    )
    return ItemOut.of(item)


@items.get("", response_model=ItemPage)
def list_items(
    reader: MediaReader,
    session: DbSession,
    container: AppContainer,
    profile_id: uuid.UUID | None = None,
    kind: ItemKind | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> ItemPage:
    if limit > container.settings.page_size_max:
        raise InvalidInput(
            f"A page holds at most {container.settings.page_size_max} items.", code="page_too_large"
        )
    page = service.list_items(
        session,
        reader=reader,
        profile_id=profile_id,
        kind=kind,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return ItemPage(items=[ItemOut.of(i) for i in page.items], next_cursor=page.next_cursor)


@items.get("/{item_id}", response_model=ItemDetail)
def get_item(
    item_id: uuid.UUID, reader: MediaReader, session: DbSession, container: AppContainer
) -> ItemDetail:
    item = service.get_item(session, reader=reader, item_id=item_id)
    derived = service.derived_items(session, item=item)
    transcript = next(
        (
            service.read_transcript(container.vault, item=d)["text"]
            for d in derived
            if d.kind == ItemKind.TRANSCRIPT
        ),
        None,
    )
    if item.kind == ItemKind.TRANSCRIPT:
        transcript = service.read_transcript(container.vault, item=item)["text"]
    return ItemDetail(
        **ItemOut.of(item).model_dump(),
        derived=[ItemOut.of(d) for d in derived],
        transcript=transcript,
    )


@items.get("/{item_id}/content")
def item_content(
    item_id: uuid.UUID,
    reader: MediaReader,
    session: DbSession,
    container: AppContainer,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The item decrypted, streamed; one HTTP range (RFC 9110 §14) for seeking in media."""
    content = service.open_content(
        session, container.vault, reader=reader, item_id=item_id, byte_range=range_header
    )
    headers = {
        "accept-ranges": "bytes",
        "content-length": str(content.end - content.start),
        "cache-control": "private, no-store",
        "x-content-type-options": "nosniff",
    }
    status = 200
    if content.partial:
        status = 206
        headers["content-range"] = f"bytes {content.start}-{content.end - 1}/{content.item.size}"
    media_type = "application/json" if content.item.blob_key is None else content.item.media_type
    return StreamingResponse(
        content.chunks, status_code=status, headers=headers, media_type=media_type
    )
