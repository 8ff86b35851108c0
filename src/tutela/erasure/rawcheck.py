"""The remnant check's view of raw bytes: the SQLite files and their WALs, and
PostgreSQL's pages, read once for every job a worker pass verifies (A8; C1, S6)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from tutela.db.base import Base
from tutela.db.engine import purge_journal, rewrite_free_space
from tutela.erasure import packages, pagescan, rawscan, removal
from tutela.erasure.models import ScopeKind

if TYPE_CHECKING:
    from tutela.erasure.engine import ErasureEngine
    from tutela.erasure.jobs import Job
    from tutela.erasure.remnants import Result


def stale_copies(engine: ErasureEngine, jobs: list[Job]) -> list[dict[str, int] | None]:
    """On PostgreSQL: how often each job's erased subject's ids still appear in the raw
    pages of the key store and of the main store (dead tuples, free space, index
    entries), by store, every page read once for all the jobs; None where the pages
    cannot be read (no pageinspect, or not a superuser)."""
    stores = engine.stores
    if not (pagescan.available(stores.keys) and pagescan.available(stores.main)):
        return [None] * len(jobs)
    sets = [_subject_ids(job) for job in jobs]
    # Items' ids are kept (as uuids) in the items, their keys and the records naming them
    # (an export package's in its export's row too); a profile's or a household's in every
    # table keyed by the household.
    whole = any(job.scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD) for job in jobs)
    tables = [t.name for t in Base.metadata.sorted_tables if "household_id" in t.c]
    # An erased item's id is also cleared from the records that named it (removal.py).
    named = [t.name for t in removal.item_reference_tables()]
    main_tables = tables if whole else ["items", *named, *packages.TABLES]
    key_tables = pagescan.KEY_TABLES if whole else ("item_keys",)
    for job in jobs:
        engine.leases.renew(job)  # reading every page can take longer than a lease
    keys = pagescan.occurrences_by(stores.keys, key_tables, sets)
    main = pagescan.occurrences_by(stores.main, main_tables, sets)
    return [{"key store": k, "main database": m} for k, m in zip(keys, main, strict=True)]


def _subject_ids(job: Job) -> list[uuid.UUID]:
    scope, fp = job.scope, job.fp
    if scope.kind is ScopeKind.HOUSEHOLD:
        return [scope.hh]
    if scope.kind is ScopeKind.PROFILE:
        return [uuid.UUID(p) for p in fp.profile_ids] or [scope.subject()[1]]
    return [uuid.UUID(i) for i in fp.item_ids]


def raw_files(engine: ErasureEngine, jobs: list[Job], results: list[Result]) -> None:
    """The raw scan of the SQLite files (main store, key store) and their WALs (C1, S6),
    once for every job given.

    Each store's WAL is checkpointed and truncated first, so it holds no old page copies.
    A store whose bytes still show an erased id or ciphertext has its free space
    rewritten (`rewrite_free_space`: VACUUM, then the truncation again) and is scanned
    again. That removes the copies SQLite leaves in the unallocated space of rebalanced
    b-tree pages, which `secure_delete` never zeroes; what is still there after the
    rewrite lies in live rows, and is reported, for each job that it belongs to (one
    scan tells the jobs' hits apart: `rawscan.scan_sets`). The files are read in a child
    process (`erasure/rawscan.py`): closing a descriptor of a
    live database file here would drop this process's SQLite locks on it.
    """
    stores = {"main database file": engine.stores.main, "key store file": engine.stores.keys}
    files = {name: path for name, eng in stores.items() if (path := _sqlite_path(eng))}
    if not files:
        return
    sets = [rawscan.NeedleSet(_id_forms(job.fp), _samples(job.fp)) for job in jobs]
    for name in files:
        purge_journal(stores[name])
    found = raw_scan(files, sets, engine=engine, jobs=jobs)
    dirty = {name: files[name] for name in files if any(hits[name] for hits in found)}
    if dirty:
        for name in dirty:
            rewrite_free_space(stores[name])
        again = raw_scan(dirty, sets, engine=engine, jobs=jobs)
        for hits, rescanned in zip(found, again, strict=True):
            hits.update(rescanned)
    for result, hits in zip(results, found, strict=True):
        for name, count in hits.items():
            result.add(name, "raw bytes of erased ids or ciphertext", count)


def raw_scan(
    files: dict[str, Path],
    sets: list[rawscan.NeedleSet],
    *,
    engine: ErasureEngine,
    jobs: list[Job],
) -> list[dict[str, int]]:
    """Hits per set and named database file (the file and its WAL together), every file
    read once for all the sets (`rawscan.scan_sets`)."""
    for job in jobs:
        engine.leases.renew(job)  # reading a large file can take longer than a lease
    paths = {name: (path, path.with_name(path.name + "-wal")) for name, path in files.items()}
    found = rawscan.scan_sets(
        [p for pair in paths.values() for p in pair],
        sets,
        timeout=engine.settings.erasure_lease_seconds,
    )
    return [
        {name: sum(hits[p].count for p in pair if p in hits) for name, pair in paths.items()}
        for hits in found
    ]


def _sqlite_path(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    if engine.url.database == ":memory:":
        return None
    return Path(engine.url.database)


def _id_forms(fp: Any) -> set[bytes]:
    ids = set(fp.subject_ids) | set(fp.profile_ids) | set(fp.account_ids) | set(fp.item_ids)
    return {uuid.UUID(i).hex.encode() for i in ids}


def _samples(fp: Any) -> list[bytes]:
    return [base64.b64decode(s) for s in fp.samples]
