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
from tutela.erasure import pagescan, rawscan
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
    # Items' ids are kept (as uuids) in the items and their keys alone; a profile's or a
    # household's in every table keyed by the household.
    whole = any(job.scope.kind in (ScopeKind.PROFILE, ScopeKind.HOUSEHOLD) for job in jobs)
    tables = [t.name for t in Base.metadata.sorted_tables if "household_id" in t.c]
    main_tables = tables if whole else ["items"]
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
    rewrite lies in live rows, and is reported, for each job that it belongs to. The
    files are read in a child process (`erasure/rawscan.py`): closing a descriptor of a
    live database file here would drop this process's SQLite locks on it.
    """
    stores = {"main database file": engine.stores.main, "key store file": engine.stores.keys}
    files = {name: path for name, eng in stores.items() if (path := _sqlite_path(eng))}
    if not files:
        return
    forms = [(_id_forms(job.fp), _samples(job.fp)) for job in jobs]
    hex_ids = set().union(*(ids for ids, _ in forms))
    needles = list(dict.fromkeys(n for _, samples in forms for n in samples))
    for name in files:
        purge_journal(stores[name])
    hits = raw_scan(files, hex_ids, needles, engine=engine, jobs=jobs)
    dirty = {name: files[name] for name, count in hits.items() if count}
    if dirty:
        for name in dirty:
            rewrite_free_space(stores[name])
        hits.update(raw_scan(dirty, hex_ids, needles, engine=engine, jobs=jobs))
    found: list[dict[str, int]] = [dict.fromkeys(files, 0) for _ in jobs]
    still = {name: files[name] for name, count in hits.items() if count}
    if still and len(jobs) == 1:
        found[0].update(hits)
    elif still:
        for k, (ids, samples) in enumerate(forms):
            found[k].update(raw_scan(still, ids, samples, engine=engine, jobs=jobs))
    for result, counts in zip(results, found, strict=True):
        for name, count in counts.items():
            result.add(name, "raw bytes of erased ids or ciphertext", count)


def raw_scan(
    files: dict[str, Path],
    hex_ids: set[bytes],
    samples: list[bytes],
    *,
    engine: ErasureEngine,
    jobs: list[Job],
) -> dict[str, int]:
    """Hits per named database file, counting the file and its WAL together."""
    for job in jobs:
        engine.leases.renew(job)  # reading a large file can take longer than a lease
    paths = {name: (path, path.with_name(path.name + "-wal")) for name, path in files.items()}
    found = rawscan.scan(
        [p for pair in paths.values() for p in pair],
        hex_ids=hex_ids,
        needles=samples,
        timeout=engine.settings.erasure_lease_seconds,
    )
    return {name: sum(found[p].count for p in pair if p in found) for name, pair in paths.items()}


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
