"""A withdrawal counts from the very next check, even where checks are answered from a
cache (C6): in another cache of the same store, in the withdrawing session itself, and
on PostgreSQL whatever state the other checkers are in (acknowledging, silent until
their lease ends, or out of their lease)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.factories import make_home
from tutela.consent.freshness import LEASE_SECONDS, PostgresCache, cache_for
from tutela.consent.ledger import ConsentLedger, Subject
from tutela.consent.models import Channel, Method
from tutela.container import Container


@pytest.fixture
def subject(container: Container, unique: str) -> Subject:
    home = make_home(container, tag=unique)
    return Subject(home.household_id, next(iter(home.adult_profiles.values())), "adult")


@pytest.fixture
def other(container: Container) -> Iterator[ConsentLedger]:
    """A second checker of the same store, with a cache of its own: another process."""
    cache = cache_for(container.stores.main)
    if isinstance(cache, PostgresCache):
        assert cache.wait_trusted(10.0)
    yield ConsentLedger(container.stores.session, container.consent.catalogue, cache=cache)
    cache.close()


def _say(container: Container, subject: Subject, granted: bool) -> float:
    """Grant or withdraw human review; returns how long the commit took."""
    with container.stores.session() as session:
        container.consent.record(
            session,
            subject,
            {"human_review": granted},
            actor="system",
            channel=Channel.SYSTEM,
            method=Method.CHECKBOX,
            notice_version=1,
            now=container.clock.now(),
        )
        began = time.monotonic()
        session.commit()
        return time.monotonic() - began


def _until_allowed(ledger: ConsentLedger, subject: Subject, container: Container) -> None:
    """A grant may be seen a moment late (refusing meanwhile is safe)."""
    deadline = time.monotonic() + 5
    while not ledger.allows(subject, "human_review", container.clock.now()):
        assert time.monotonic() < deadline, "a grant was never seen"
        time.sleep(0.002)


def test_a_withdrawal_is_refused_by_the_next_check_of_another_checker(
    container: Container, subject: Subject, other: ConsentLedger
) -> None:
    for _ in range(10):
        _say(container, subject, True)
        _until_allowed(other, subject, container)
        # Answered from its cache now.
        assert other.allows(subject, "human_review", container.clock.now())
        _say(container, subject, False)
        decision = other.decide(subject, "human_review", container.clock.now())
        assert (decision.allowed, decision.reason.value) == (False, "withdrawn")


def test_a_session_sees_its_own_withdrawal_before_it_commits(
    container: Container, subject: Subject, other: ConsentLedger
) -> None:
    _say(container, subject, True)
    _until_allowed(other, subject, container)
    now = container.clock.now()
    with container.stores.session() as session:
        container.consent.refuse_all(
            session, subject, actor="system", channel=Channel.SYSTEM, now=now
        )
        assert not other.allows(subject, "human_review", now, session=session)
        assert not other.allows(subject, "storage", now, session=session)
        session.commit()
    assert not other.allows(subject, "human_review", now)
    assert not container.consent.allows(subject, "storage", now)


def test_a_check_in_the_past_reads_the_event_of_that_time(
    container: Container, subject: Subject, other: ConsentLedger
) -> None:
    """The cache holds the latest event; a check at an earlier time is answered from
    the events of that time."""
    before = container.clock.now()
    container.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    _say(container, subject, True)
    _until_allowed(other, subject, container)
    assert not other.allows(subject, "human_review", before)
    assert other.allows(subject, "human_review", container.clock.now())


def _checker_row(container: Container, *, lease: float) -> None:
    """A checker that never acknowledges anything (a process stuck or cut off), whose
    lease ends `lease` seconds from now by the store's clock."""
    with container.stores.session() as session:
        session.execute(
            text(
                "INSERT INTO consent_checkers (id, acked, expires_at) VALUES "
                "(:id, 0, clock_timestamp() + make_interval(secs => :lease))"
            ),
            {"id": uuid.uuid4(), "lease": lease},
        )
        session.commit()


@pytest.mark.postgresql
def test_a_withdrawal_waits_for_a_silent_checker_until_its_lease_ends(
    container: Container, subject: Subject, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("leases are PostgreSQL's")
    _checker_row(container, lease=-5.0)  # a lease long over: not waited for
    assert _say(container, subject, False) < 1.0
    _checker_row(container, lease=1.5)
    waited = _say(container, subject, False)
    assert 1.2 <= waited < 1.5 + LEASE_SECONDS


@pytest.mark.postgresql
def test_a_checker_out_of_its_lease_reads_the_store(
    container: Container, subject: Subject, other: ConsentLedger, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("leases are PostgreSQL's")
    _say(container, subject, True)
    _until_allowed(other, subject, container)
    cache = other.cache
    assert isinstance(cache, PostgresCache)
    # Cut off: it hears nothing and renews nothing from now on.
    cache._stopping.set()
    assert cache._listener is not None
    cache._listener.join(timeout=5)
    assert not cache.trusted
    waited = _say(container, subject, False)
    assert waited < LEASE_SECONDS + 1.0
    assert not other.allows(subject, "human_review", container.clock.now())
