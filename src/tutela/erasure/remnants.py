"""The remnant check: nothing is called deleted unless its deletion was verified (A8).

It looks in every store Tutela keeps: the main database's rows (every table keyed by the
erased household or profile, and the items in scope), derived artifacts, the key store,
the blob store, the outbox and the mail folder, the audit trail's subjects, the
downstream deliveries, and, on the embedded store, the raw bytes of the SQLite files and
their write-ahead logs: a row deleted but still present in a free page or the WAL is not
deleted (C1, S6).
"""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.orm import Session

from tutela.audit.models import AuditEvent
from tutela.db.base import Base
from tutela.db.idsets import pair_in
from tutela.erasure import downstream, packages, rawcheck, removal, selection
from tutela.erasure.models import ScopeKind
from tutela.households.models import Household
from tutela.notices.models import OutboxMessage
from tutela.vault.models import MediaItem

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine
    from tutela.erasure.jobs import Job


@dataclass(frozen=True)
class Finding:
    store: str
    what: str
    count: int


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    stale_copies: dict[str, int] | None = None
    """Older versions of erased rows seen in PostgreSQL's pages, by store (None: not looked)."""

    @property
    def clean(self) -> bool:
        return not self.findings

    def add(self, store: str, what: str, count: int) -> None:
        if store not in self.stores:
            self.stores.append(store)
        if count:
            self.findings.append(Finding(store, what, count))


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def check(engine: ErasureEngine, job: Job) -> Result:
    """One job's remnant check (`check_all` of one)."""
    return check_all(engine, [job])[0]


def check_all(engine: ErasureEngine, jobs: list[Job]) -> list[Result]:
    """The remnant check of several jobs at once: each job's live stores apart, and the
    raw bytes (the SQLite files, PostgreSQL's pages) read ONCE for all of them, since
    reading them costs the same for one job as for many. Hits are told apart per job
    only when there are any (a second read of the files that still hold some)."""
    results = [check_live(engine, job) for job in jobs]
    if engine.settings.erasure_raw_scan:
        rawcheck.raw_files(engine, jobs, results)
        for result, stale in zip(results, rawcheck.stale_copies(engine, jobs), strict=True):
            result.stale_copies = stale
    return results


def check_live(engine: ErasureEngine, job: Job) -> Result:
    """What the live stores still hold of the job's scope: rows, keys, blobs, notices."""
    scope, fp, pg = job.scope, job.fp, engine.postgresql
    result = Result()
    pairs = fp.pairs()
    partial = scope.kind not in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD)
    with engine.stores.session() as session:
        # Rows: the items the job set out to erase, and anything the scope names now.
        if partial:
            left = _count(
                session,
                select(func.count())
                .select_from(MediaItem)
                .where(pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=pg)),
            )
            derived = _count(
                session,
                select(func.count())
                .select_from(MediaItem)
                .where(
                    pair_in(MediaItem.household_id, MediaItem.source_item_id, pairs, postgresql=pg)
                ),
            )
            result.add("derived artifacts", "transcripts and thumbnails", derived)
            references = [
                select(func.count().label("n"))
                .select_from(table)
                .where(pair_in(table.c.household_id, table.c.item_id, pairs, postgresql=pg))
                for table in removal.item_reference_tables()
            ]
            result.add(
                "main database", "records naming the items", _sum_of_counts(session, references)
            )
            result.add(
                "main database",
                "export packages",
                packages.remaining(session, pairs, postgresql=pg),
            )
        else:
            # Every item of the profile or household is counted by the scope's own query
            # below; its derived artifacts are all of them that have a source.
            left = 0
            derived = _count(
                session,
                select(func.count())
                .select_from(MediaItem)
                .where(
                    selection.primary(scope, postgresql=pg),
                    MediaItem.source_item_id.is_not(None),
                ),
            )
            result.add("derived artifacts", "transcripts and thumbnails", derived)
        now_in_scope = _count(
            session,
            select(func.count()).select_from(
                selection.items_query(scope, postgresql=pg).subquery()
            ),
        )
        result.add("main database", "items", left + now_in_scope)
        if scope.kind is ScopeKind.HOUSEHOLD:
            _household_rows(session, scope.hh, result)
        elif scope.kind is ScopeKind.PROFILE:
            _profile_rows(session, scope.hh, scope.profile_id, result)
        _notices(engine, job, session, result)
        erased_refs = [f"profile:{p}" for p in fp.profile_ids] + [
            f"account:{a}" for a in fp.account_ids
        ]
        audit = 0
        if erased_refs:
            audit = _count(
                session,
                select(func.count())
                .select_from(AuditEvent)
                .where(or_(AuditEvent.subject.in_(erased_refs), AuditEvent.actor.in_(erased_refs))),
            )
        result.add("audit trail", "events naming the subject", audit)
        state = downstream.pending(session, request_id=job.row.id)
        result.add("downstream consumers", "unconfirmed notices", state.waiting + state.dead)
    # Keys.
    if scope.kind is ScopeKind.HOUSEHOLD:
        keys_left = engine.keys.remaining_keys(household_id=scope.hh)
    elif scope.kind is ScopeKind.PROFILE:
        assert scope.profile_id is not None
        keys_left = engine.keys.remaining_keys(
            household_id=scope.hh, profile_ids=[scope.profile_id]
        )
    else:
        keys_left = engine.keys.remaining_item_keys(pairs)
    result.add("key store", "keys", keys_left)
    # Blobs.
    blobs = engine.vault.blobs
    if scope.kind is ScopeKind.HOUSEHOLD:
        blobs_left = sum(1 for _ in blobs.keys(f"{scope.hh}/"))
    elif scope.kind is ScopeKind.PROFILE:
        blobs_left = sum(1 for _ in blobs.keys(f"{scope.hh}/{scope.profile_id}/"))
    else:
        blobs_left = sum(1 for key in fp.blob_keys if blobs.exists(key))
    result.add("blob store", "blobs", blobs_left)
    return result


def _notices(engine: ErasureEngine, job: Job, session: Session, result: Result) -> None:
    """The outbox and the mail folder: no notice to or about the subject is queued or
    kept, the mailer holds none of the erased notices' copies, and no file in the mail
    folder names an erased id (A5). Items are named by no notice: only a household's and
    a profile's erasures look in the mail folder."""
    which = removal.notices_of(job.scope)
    queued = 0
    if which is not None:
        queued = _count(session, select(func.count()).select_from(OutboxMessage).where(which))
    result.add("outbox", "queued and delivered notices", queued)
    if which is None:
        return
    held = len(engine.notices.held(job.fp.notices))
    folder = engine.settings.mail_path
    if held or folder.is_dir():
        ids = set(job.fp.subject_ids) | set(job.fp.profile_ids) | set(job.fp.account_ids)
        ids |= set(job.fp.item_ids)
        result.add(
            "mail folder",
            "copies of erased notices, files naming erased ids",
            held + mail_scan(folder, ids),
        )


_UUID_TEXT = re.compile(
    r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}(?![0-9a-fA-F])"
)


_QUOTED = re.compile(rb"quoted-printable", re.IGNORECASE)
_ENCODED = re.compile(rb"base64|=\?", re.IGNORECASE)


def _texts(data: bytes) -> list[str]:
    """A mail file as stored and as a reader sees it. Quoted-printable (what notices
    use) is decoded directly; only base64 parts or RFC 2047 header words need the whole
    message parsed, which costs about 0.8 ms a file."""
    texts = [data.decode("latin-1")]
    if _QUOTED.search(data):
        texts.append(binascii.a2b_qp(data).decode("utf-8", "replace"))
    if not _ENCODED.search(data):
        return texts
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception:  # a malformed file is still scanned as stored
        return texts
    assert isinstance(message, EmailMessage)
    texts += [f"{name}: {value}" for name, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                texts.append(str(part.get_content()))
            except (LookupError, ValueError):
                continue
    return texts


def mail_scan(folder: Path, ids: set[str]) -> int:
    """Files in `folder` that name any of `ids` (hyphenated, or as 32 hex digits)."""
    if not ids or not folder.is_dir():
        return 0
    wanted = {uuid.UUID(i).hex for i in ids}
    hits = 0
    for path in folder.iterdir():
        if not path.is_file():
            continue
        if any(
            match.replace("-", "").lower() in wanted
            for text in _texts(path.read_bytes())
            for match in _UUID_TEXT.findall(text)
        ):
            hits += 1
    return hits


def _sum_of_counts(session: Session, counts: list[Any]) -> int:
    """The sum of several counts in one statement (one round trip, not one per table)."""
    if not counts:
        return 0
    parts = union_all(*counts).subquery()
    return _count(session, select(func.coalesce(func.sum(parts.c.n), 0)))


def _household_rows(session: Session, hh: uuid.UUID, result: Result) -> None:
    counts = [select(func.count().label("n")).select_from(Household).where(Household.id == hh)]
    for table in Base.metadata.sorted_tables:
        if "household_id" in table.c:
            counts.append(
                select(func.count().label("n")).select_from(table).where(table.c.household_id == hh)
            )
    result.add("main database", "rows of the household", _sum_of_counts(session, counts))


def _profile_rows(session: Session, hh: uuid.UUID, pid: uuid.UUID | None, result: Result) -> None:
    counts = []
    for table in Base.metadata.sorted_tables:
        if "household_id" not in table.c:
            continue
        columns = [c for c in ("profile_id", "child_profile_id") if c in table.c]
        if table.name == "profiles":
            columns.append("id")
        for column in columns:
            counts.append(
                select(func.count().label("n"))
                .select_from(table)
                .where(table.c.household_id == hh, table.c[column] == pid)
            )
    result.add("main database", "rows of the profile", _sum_of_counts(session, counts))
