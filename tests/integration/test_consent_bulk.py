"""The bulk check gives, for every pair, the answer of the single check (C3, C4, C6).

Random ledgers over adults and children: grants and withdrawals at random times, under
notice versions older and newer than each purpose's last material change, asked at
several times (now, and moments in the past), with chunks and purpose groups small
enough that every boundary is crossed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import insert

from tests.factories import make_home
from tutela.consent import bulk
from tutela.consent.freshness import PostgresCache, cache_for
from tutela.consent.ledger import ConsentLedger, Subject
from tutela.consent.models import ConsentEvent
from tutela.consent.purposes import parse_purposes
from tutela.container import Container

PURPOSES = """
notice_version = 3
[purpose.storage]
title = "t"
description = "d"
adult_default = true
[purpose.precise_geolocation]
title = "t"
description = "d"
adult_default = true
changed_in = 2
[purpose.human_review]
title = "t"
description = "d"
adult_default = false
[purpose.model_training]
title = "t"
description = "d"
adult_default = false
changed_in = 3
[purpose.third_party_disclosure]
title = "t"
description = "d"
adult_default = false
separate = true
[purpose.voice_commands]
title = "t"
description = "d"
adult_default = true
changed_in = 3
"""


@pytest.fixture
def ledger(container: Container) -> Iterator[ConsentLedger]:
    cache = cache_for(container.stores.main)
    if isinstance(cache, PostgresCache):
        assert cache.wait_trusted(10.0)  # so repeated checks are answered from the cache
    yield ConsentLedger(container.stores.session, parse_purposes(PURPOSES), cache=cache)
    cache.close()


def _subjects(container: Container, unique: str, homes: int) -> list[Subject]:
    subjects = []
    for n in range(homes):
        home = make_home(container, tag=f"{unique}{n}", second_adult=n % 2 == 0)
        subjects += [
            Subject(home.household_id, pid, "adult") for pid in home.adult_profiles.values()
        ]
        subjects += [Subject(home.household_id, pid, "child") for pid in home.child_profiles]
    return subjects


def _random_ledger(
    container: Container, subjects: list[Subject], names: list[str], rng: random.Random
) -> None:
    now = container.clock.now()
    rows = []
    for s in subjects:
        # Some subjects say nothing at all: their defaults are checked too.
        for _ in range(rng.choice([0, 1, 3, 8, 15])):
            rows.append(
                {
                    "household_id": s.household_id,
                    "id": uuid.uuid4(),
                    "profile_id": s.profile_id,
                    "purpose": rng.choice(names),
                    "granted": rng.random() < 0.6,
                    "at": now - timedelta(minutes=rng.randint(0, 600)),
                    "actor": "system",
                    "channel": "system",
                    "method": "checkbox",
                    "notice_version": rng.randint(1, 3),
                    "parental_consent_id": None,
                }
            )
    with container.stores.session() as session:
        session.execute(insert(ConsentEvent), rows)
        session.commit()


@pytest.mark.parametrize(("seed", "range_min"), [(1, 10**9), (2, 10**9), (3, 1)])
def test_allows_many_matches_decide_for_every_pair(
    container: Container,
    ledger: ConsentLedger,
    unique: str,
    seed: int,
    range_min: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each subject's own index range (`range_min` out of reach), and ranges of
    households read in index order (from one subject on)."""
    monkeypatch.setattr(bulk, "RANGE_MIN", range_min)
    monkeypatch.setattr(bulk, "PG_CHUNK", 4)
    monkeypatch.setattr(bulk, "SQLITE_CHUNK", 3)
    monkeypatch.setattr(bulk, "MASK_BITS", 4)
    rng = random.Random(seed)
    subjects = _subjects(container, unique, homes=4)
    names = ledger.catalogue.names
    _random_ledger(container, subjects, names, rng)
    now = container.clock.now()
    reasons = set()
    for at in (
        now,
        now - timedelta(minutes=200),
        now - timedelta(minutes=590),
        now - timedelta(days=1),
    ):
        many = ledger.allows_many(subjects, names, at)
        single = set()
        for s in subjects:
            for name in names:
                decision = ledger.decide(s, name, at)
                reasons.add(decision.reason)
                with container.stores.session() as session:
                    assert ledger.decide(s, name, at, session=session) == decision
                if decision.allowed:
                    single.add((s.profile_id, name))
        assert many == single
        some = rng.sample(names, 2)
        assert ledger.allows_many(subjects[::2], some, at) == {
            pair
            for pair in single
            if pair[1] in some and pair[0] in {s.profile_id for s in subjects[::2]}
        }
    # The ledgers reach every rule: defaults, withdrawals, stale notices, children.
    assert {r.value for r in reasons} >= {
        "granted",
        "default_on",
        "not_granted",
        "withdrawn",
        "fresh_consent_needed",
        "parental_consent_required",
    }


def test_allows_many_of_nothing_is_empty(ledger: ConsentLedger, container: Container) -> None:
    assert ledger.allows_many([], ["storage"], container.clock.now()) == set()
