"""Routes of exports: ask for a copy of a profile's data, follow it, download it (C6, C7).

Asking needs a recent second factor (step-up, C7), like a bulk erasure: a copy of a
child's recordings is as sensitive as deleting them. Only visible profiles can be
exported (an adult's own, a guardian's children); only the account that asked sees an
export. Another household's ids answer 404 `not_found`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tutela.deps import AppContainer, CurrentPrincipal, DbSession, MediaReader
from tutela.exports import rules, service
from tutela.exports.models import Export
from tutela.households import service as households

router = APIRouter(prefix="/api/v1", tags=["exports"])


class ProgressOut(BaseModel):
    done: int
    total: int


class ExportOut(BaseModel):
    id: uuid.UUID
    profile_id: uuid.UUID
    state: str
    """queued, packaging, ready, expired or failed."""
    reason: str | None
    progress: ProgressOut
    size: int | None
    requested_at: datetime
    ready_at: datetime | None
    expires_at: datetime | None
    download_url: str | None
    erasure_receipt_url: str | None

    @classmethod
    def of(cls, export: Export, *, now: datetime) -> ExportOut:
        state = rules.shown_state(export.state, export.expires_at, now=now)
        ready = state == "ready"
        return cls(
            id=export.id,
            profile_id=export.profile_id,
            state=state,
            reason=export.reason,
            progress=ProgressOut(done=export.items_done, total=export.items_total),
            size=export.size if ready else None,
            requested_at=export.requested_at,
            ready_at=export.ready_at,
            expires_at=export.expires_at,
            download_url=f"/api/v1/exports/{export.id}/download" if ready else None,
            erasure_receipt_url=(
                f"/api/v1/receipts/{export.erasure_request_id}"
                if export.erasure_request_id
                else None
            ),
        )


@router.post("/profiles/{profile_id}/exports", status_code=202, response_model=ExportOut)
def request_export(
    profile_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    _media: MediaReader,
) -> ExportOut:
    """Ask for a copy of a profile's data (C6): 202 with the export, packaged by a worker.
    Needs a recent step-up (C7); asking again while one is being made answers it."""
    now = container.clock.now()
    visible = households.visible_profile_ids(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        own_profile_id=principal.profile_id,
    )
    # Not found before anything else: a step-up reveals nothing about other ids.
    service.check_exportable(
        session, household_id=principal.household_id, profile_id=profile_id, visible=visible
    )
    container.gate.require_step_up(session, principal, now=now)
    export = service.request_export(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        profile_id=profile_id,
        visible=visible,
        now=now,
    )
    answer = ExportOut.of(export, now=now)
    container.erasure.wakeup.local()  # the API process's own worker packages it now
    return answer


@router.get("/exports", response_model=list[ExportOut])
def list_exports(
    principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> list[ExportOut]:
    """The exports this account asked for, newest first."""
    now = container.clock.now()
    return [
        ExportOut.of(e, now=now)
        for e in service.list_exports(
            session, household_id=principal.household_id, account_id=principal.account_id
        )
    ]


@router.get("/exports/{export_id}", response_model=ExportOut)
def get_export(
    export_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession, container: AppContainer
) -> ExportOut:
    """One export: its state and progress (items done of total)."""
    export = service.get_export(
        session,
        household_id=principal.household_id,
        account_id=principal.account_id,
        export_id=export_id,
    )
    return ExportOut.of(export, now=container.clock.now())


@router.get("/exports/{export_id}/download", response_class=Response)
def download_export(
    export_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: DbSession,
    container: AppContainer,
    _media: MediaReader,
) -> StreamingResponse:
    """The zip, decrypted as it streams: 409 `export_not_ready` before it is ready, 410
    `export_expired` once its link has expired."""
    download = service.open_download(
        session,
        container.vault,
        household_id=principal.household_id,
        account_id=principal.account_id,
        export_id=export_id,
        now=container.clock.now(),
    )
    export = download.export
    name = f"tutela-export-{rules.stamp(export.ready_at or export.requested_at)}.zip"
    return StreamingResponse(
        download.chunks,
        media_type="application/zip",
        headers={
            "content-length": str(export.size),
            "content-disposition": f'attachment; filename="{name}"',
            "cache-control": "no-store",
        },
    )
