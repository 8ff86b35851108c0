"""The cache's rules that need no store (C6): a read overtaken by an invalidation is not
kept, a checker out of its lease answers from the store only, and an invalidation names
the profile it drops."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine

from tutela.consent.freshness import Latest, PostgresCache, Who

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WHO: Who = (uuid.uuid4(), uuid.uuid4())


class Reads:
    """Stands in for the store: counts reads, and may run something during one."""

    def __init__(self, cache: PostgresCache, answer: Latest | None) -> None:
        self.cache, self.answer, self.count = cache, answer, 0
        self.during: str | None = None

    def __call__(self, who: Who, purpose: str, at: datetime | None) -> Latest | None:
        self.count += 1
        if self.during is not None:
            self.cache._invalidate(self.during)  # a notification arrives mid-read
            self.during = None
        return self.answer


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> PostgresCache:
    made = PostgresCache(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    made._listener = object()  # type: ignore[assignment]  # no listener thread here
    made._trusted_until = time.monotonic() + 60
    return made


def test_a_trusted_cache_reads_a_pair_once(
    cache: PostgresCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(cache, Latest(True, 1, NOW - timedelta(hours=1)))
    monkeypatch.setattr(cache, "_read", reads)
    for _ in range(3):
        assert cache.latest(WHO, "storage", NOW) == reads.answer
    assert reads.count == 1


def test_a_read_overtaken_by_a_withdrawal_is_not_kept(
    cache: PostgresCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(cache, Latest(True, 1, NOW - timedelta(hours=1)))
    monkeypatch.setattr(cache, "_read", reads)
    reads.during = f"7 {WHO[0]} {WHO[1]}"
    cache.latest(WHO, "storage", NOW)
    cache.latest(WHO, "storage", NOW)
    assert reads.count == 2  # the first answer was not kept
    assert cache._acked == 7


def test_an_invalidation_drops_only_its_profile(
    cache: PostgresCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(cache, None)
    monkeypatch.setattr(cache, "_read", reads)
    other: Who = (WHO[0], uuid.uuid4())
    cache.latest(WHO, "storage", NOW)
    cache.latest(other, "storage", NOW)
    cache._invalidate(f"0 {WHO[0]} {WHO[1]}")
    cache.latest(WHO, "storage", NOW)
    cache.latest(other, "storage", NOW)
    assert reads.count == 3


def test_out_of_its_lease_a_checker_reads_the_store_every_time(
    cache: PostgresCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(cache, Latest(True, 1, NOW - timedelta(hours=1)))
    monkeypatch.setattr(cache, "_read", reads)
    cache.latest(WHO, "storage", NOW)
    cache._trusted_until = time.monotonic() - 0.001
    cache.latest(WHO, "storage", NOW)
    cache.latest(WHO, "storage", NOW)
    assert reads.count == 3


def test_an_event_later_than_the_check_is_not_its_answer(
    cache: PostgresCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache holds the latest event of all; a check at an earlier time reads the
    store for the event of its time."""
    reads = Reads(cache, Latest(False, 1, NOW))
    monkeypatch.setattr(cache, "_read", reads)
    cache.latest(WHO, "storage", NOW)
    cache.latest(WHO, "storage", NOW - timedelta(minutes=5))
    assert reads.count == 3  # latest of all, then the one no later than the earlier time
