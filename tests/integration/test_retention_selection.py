"""How the retention sweep finds expired items, on both stores: through indexes (the
plans), in keyset pages, by rule and by choice, derived artifacts with their sources,
and in batch requests across households and profiles (A6, C9)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import select, text

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.erasure.models import RequesterKind
from tutela.erasure.scope import Member, Requester
from tutela.households.models import Profile
from tutela.households.service import CreatedHome
from tutela.retention import service
from tutela.retention.policy import default_policy_path, load_policy
from tutela.retention.sweep import explain_selection, run_sweep
from tutela.vault.models import MediaItem

Calls = list[tuple[Requester, list[Member]]]

# The indexes each statement of the selection must search.
EXPECTED = {
    "rule_page": ("ix_items_retention",),
    "choice_page": ("ix_items_household_profile_captured",),
    "items_of": ("pk_items",),
    "owners_of": ("pk_profiles", "pk_auto_delete_choices"),
    "choices_page": ("pk_auto_delete_choices",),
}
SQLITE_NAMES = {  # SQLite names primary keys after their table
    "pk_items": "sqlite_autoindex_items_1",
    "pk_profiles": "sqlite_autoindex_profiles_1",
    "pk_auto_delete_choices": "sqlite_autoindex_auto_delete_choices_1",
}


def _items(container: Container) -> set[uuid.UUID]:
    with container.stores.session() as s:
        return set(s.scalars(select(MediaItem.id)))


def _adult(home: CreatedHome) -> uuid.UUID:
    return next(iter(home.adult_profiles.values()))


def _choose(container: Container, home: CreatedHome, profile: uuid.UUID, kind: str) -> None:
    with container.stores.session() as s:
        service.set_auto_delete(
            s,
            household_id=home.household_id,
            profile_id=profile,
            kind=kind,
            choice="3m",
            actor="account:test",
            now=container.clock.now(),
        )


def _members(calls: Calls, kind: RequesterKind | None = None) -> list[uuid.UUID]:
    return [m.item_id for r, ms in calls for m in ms if kind is None or r.kind is kind]


# --- the plans ------------------------------------------------------------------------


def _pg_scans_without_bounds(plan: list[str]) -> list[str]:
    """Scan nodes on `items` that read it whole: a sequential scan, or an index scan
    with no Index Cond in its node (a full walk of the index)."""
    whole = []
    for at, line in enumerate(plan):
        if re.search(r"Seq Scan on items\b", line):
            whole.append(line)
            continue
        if not re.search(r"(Index|Index Only|Bitmap Index) Scan (using \S+ )?on (items|ix_)", line):
            continue
        depth = len(line) - len(line.lstrip(" ->"))
        block = []
        for below in plan[at + 1 :]:
            if "->" in below or len(below) - len(below.lstrip()) <= depth:
                break
            block.append(below)
        if not any("Index Cond" in b for b in block):
            whole.append(line)
    return whole


def test_the_selection_searches_indexes_and_never_reads_items_whole(
    container: Container, backend: str
) -> None:
    home = make_home(container, tag="plans")
    # Enough rows that reading `items` whole costs PostgreSQL's planner more than
    # searching it once per looked-up pair.
    for days in (40, 1):
        seed_media(container, home, voices=40, clips=0, days_ago=days)
    with container.stores.main.connect() as conn:
        if backend == "postgresql":
            # The test tables are tiny, so the planner would rightly read them whole; with
            # those strategies priced out, it still scans whole what no index can serve.
            for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
                conn.execute(text(f"SET LOCAL {setting} = off"))
            conn.execute(text("ANALYZE items, profiles, auto_delete_choices"))
        plans = explain_selection(conn, container.policy, container.clock.now())
        conn.rollback()
    assert set(plans) == set(EXPECTED)
    for name, plan in plans.items():
        joined = "\n".join(plan)
        for expected in EXPECTED[name]:
            index = SQLITE_NAMES.get(expected, expected) if backend == "sqlite" else expected
            if backend == "sqlite":
                assert not [line for line in plan if re.match(r"SCAN (items|profiles)\b", line)], (
                    name,
                    joined,
                )
                assert re.search(rf"SEARCH \w+ USING (COVERING )?INDEX {index} \(", joined), (
                    name,
                    joined,
                )
            else:
                assert not _pg_scans_without_bounds(plan), (name, joined)
                assert index in joined, (name, joined)


# --- keyset pages -----------------------------------------------------------------------


def test_keyset_pages_find_each_expired_item_once_across_households(
    container: Container, batch_calls: Calls
) -> None:
    homes = [make_home(container, tag=f"page{n}", child_name=f"Kid {n}") for n in range(3)]
    # The same capture times in every home: the pages break ties by household and id.
    made = [seed_media(container, home, voices=3, clips=0, days_ago=40) for home in homes]
    expired = {i for m in made for i in (*m["voice"], *m["location"])}
    assert run_sweep(container, dry_run=True, batch_size=2).expired_items == len(expired)
    assert run_sweep(container, dry_run=True, batch_size=1).expired_items == len(expired)
    assert batch_calls == []  # a dry run requests nothing
    report = run_sweep(container, batch_size=2)
    assert report.expired_items == len(expired)
    named = _members(batch_calls)
    assert len(named) == len(set(named)) and set(named) == expired
    assert all(len(members) <= 2 for _, members in batch_calls)
    assert len(batch_calls) == len(expired) // 2
    # Requested in key order (household, profile, item), whatever the pages' order.
    flat = [m for _, members in batch_calls for m in members]
    assert flat == sorted(flat, key=lambda m: (m.household_id.int, m.profile_id.int, m.item_id.int))
    # What was asked for leaves the selection at once (its state), whatever the page.
    assert run_sweep(container, batch_size=2).expired_items == 0


def test_max_batches_bounds_the_rows_read(container: Container, batch_calls: Calls) -> None:
    home = make_home(container, tag="bound")
    seed_media(container, home, voices=5, clips=0, days_ago=40)
    report = run_sweep(container, batch_size=2, max_batches=2)
    assert report.expired_items == 4
    assert sum(len(m) for _, m in batch_calls) == 4
    assert run_sweep(container, batch_size=2).expired_items == 2  # the rest, next time


# --- choices ----------------------------------------------------------------------------


def test_a_choice_shortening_the_rule_is_found_in_pages_and_requested_as_the_choice(
    container: Container, batch_calls: Calls
) -> None:
    homes = [make_home(container, tag=f"short{n}", child_name=f"Kid {n}") for n in range(2)]
    old, young = [], []
    for home in homes:
        _choose(container, home, _adult(home), "voice")  # 3 months, not the rule's 2 years
        old.append(
            seed_media(container, home, profile=_adult(home), voices=3, clips=0, days_ago=100)
        )
        young.append(
            seed_media(container, home, profile=_adult(home), voices=2, clips=0, days_ago=80)
        )
    by_choice = {i for m in old for i in m["voice"]}
    # Adults' location batches are kept 30 days: both seeded ones are past the rule.
    by_rule = {i for m in (*old, *young) for i in m["location"]}
    report = run_sweep(container, batch_size=2)
    assert report.expired_items == len(by_choice) + len(by_rule)
    assert set(_members(batch_calls, RequesterKind.AUTO_DELETE)) == by_choice
    assert set(_members(batch_calls, RequesterKind.RETENTION)) == by_rule
    assert {r.ref for r, _ in batch_calls} == {"choice:auto-delete", "rule:retention"}
    container.erasure.run_pending(limit=100)
    left = _items(container)
    # The transcripts (2 years for adults) went with their voice recordings.
    assert not {i for m in old for i in (*m["voice"], *m["transcript"])} & left
    assert {i for m in young for i in (*m["voice"], *m["transcript"])} <= left


def test_a_choice_of_a_profile_under_erasure_selects_nothing(container: Container) -> None:
    home = make_home(container, tag="gone")
    adult = _adult(home)
    _choose(container, home, adult, "voice")
    seed_media(container, home, profile=adult, voices=2, clips=0, days_ago=100)
    with container.stores.session() as s:
        profile = s.get(Profile, (home.household_id, adult))
        assert profile is not None
        profile.state = "under_erasure"
        s.commit()
    assert run_sweep(container, dry_run=True).expired_items == 0


# --- derived artifacts ------------------------------------------------------------------

ADULT_TRANSCRIPT = 'see why the assistant acted as it did."\nmax_age_days = 730'


def test_a_derived_artifact_goes_alone_only_when_its_own_age_runs_out_first(
    container: Container, tmp_path: Path
) -> None:
    # A policy keeping adults' transcripts 30 days and their voice recordings 2 years.
    policy = default_policy_path().read_text(encoding="utf-8")
    assert ADULT_TRANSCRIPT in policy
    path = tmp_path / "policy.toml"
    path.write_text(policy.replace(ADULT_TRANSCRIPT, ADULT_TRANSCRIPT[:-3] + "30"), "utf-8")
    container._policy = load_policy(path)
    home = make_home(container, tag="derived")
    adult = seed_media(container, home, profile=_adult(home), voices=2, clips=0, days_ago=40)
    # A child's voice (30 days) and transcript (90 days), both past their age.
    child = seed_media(container, home, voices=2, clips=0, days_ago=100)
    report = run_sweep(container, dry_run=True)
    # Adult: the transcripts alone, and the location batch; child: the voice recordings
    # (their transcripts go with them) and the location batch.
    assert report.expired_items == 2 + 1 + 2 + 1
    report = run_sweep(container)
    assert report.expired_items == 6
    # The child's transcripts are past their own age too, but their sources' erasure is
    # asked for: a second sweep does not ask for them again.
    assert run_sweep(container, dry_run=True).expired_items == 0
    container.erasure.run_pending(limit=100)
    left = _items(container)
    assert set(adult["voice"]) <= left
    assert not {*adult["transcript"], *adult["location"]} & left
    assert not {*child["voice"], *child["transcript"], *child["location"]} & left


# --- batches ----------------------------------------------------------------------------


def test_one_sweep_over_several_households_makes_one_batch_call_per_requester(
    container: Container, batch_calls: Calls
) -> None:
    homes = [make_home(container, tag=f"many{n}", child_name=f"Kid {n}") for n in range(3)]
    for home in homes:
        # A child's voice recordings and location batch: two kinds, one profile a home.
        seed_media(container, home, voices=2, clips=0, days_ago=40)
    for home in homes[:2]:
        _choose(container, home, _adult(home), "voice")
        seed_media(container, home, profile=_adult(home), voices=2, clips=0, days_ago=100)
    report = run_sweep(container)
    # Not one request per profile and kind (3 children x 2 kinds, 2 adults x 2 kinds):
    # one call for the rule's items and one for the choices', each across households.
    assert sorted(r.kind.value for r, _ in batch_calls) == ["auto_delete", "retention"]
    rule = next(ms for r, ms in batch_calls if r.kind is RequesterKind.RETENTION)
    chosen = next(ms for r, ms in batch_calls if r.kind is RequesterKind.AUTO_DELETE)
    assert len(rule) == 3 * 3 + 2  # 3 children's 2 voices and a location; 2 adults' location
    assert len(chosen) == 2 * 2
    assert {m.household_id for m in rule} == {h.household_id for h in homes}
    assert {m.household_id for m in chosen} == {h.household_id for h in homes[:2]}
    assert report.expired_items == len(rule) + len(chosen)


def test_items_carry_the_kind_of_their_profile(container: Container) -> None:
    home = make_home(container, tag="class")
    seed_media(container, home, days_ago=1)
    seed_media(container, home, profile=_adult(home), days_ago=1)
    with container.stores.session() as s:
        rows = s.execute(
            select(MediaItem.subject_class, Profile.kind).join(
                Profile,
                (Profile.household_id == MediaItem.household_id)
                & (Profile.id == MediaItem.profile_id),
            )
        ).all()
    assert {kind for kind, _ in rows} == {"adult", "child"}
    assert all(subject == kind for subject, kind in rows)
