"""Sets of ids bound as one parameter (`tutela.db.idsets`): one statement text whatever
the number of ids, and a plan that searches the primary key (A5, A8 at scale)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select

from tests.factories import make_home, seed_media
from tutela.container import Container
from tutela.db.idsets import any_of, pair_in
from tutela.vault.models import MediaItem


def _sql(container: Container, statement: Any) -> tuple[str, dict[str, Any]]:
    compiled = statement.compile(container.stores.main)
    return str(compiled), dict(compiled.params)


def _plan(container: Container, statement: Any) -> str:
    sql, params = _sql(container, statement)
    postgresql = container.stores.main.dialect.name == "postgresql"
    with container.stores.main.connect() as conn:
        if postgresql:
            # A few test rows make any table "small": ask whether the index CAN be used.
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + sql, params).all()
            return "\n".join(r[0] for r in rows)
        positional = tuple(params[k] for k in statement.compile(container.stores.main).positiontup)
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, positional).all()
        return "\n".join(str(r[-1]) for r in rows)


def test_one_statement_for_one_id_and_for_a_thousand(container: Container) -> None:
    pg = container.stores.main.dialect.name == "postgresql"
    one = [(uuid.uuid4(), uuid.uuid4())]
    many = [(uuid.uuid4(), uuid.uuid4()) for _ in range(1000)]
    for build in (
        lambda pairs: delete(MediaItem).where(
            pair_in(MediaItem.household_id, MediaItem.id, pairs, postgresql=pg)
        ),
        lambda pairs: select(MediaItem.id).where(
            any_of(MediaItem.id, [b for _, b in pairs], postgresql=pg)
        ),
    ):
        small, small_params = _sql(container, build(one))
        large, large_params = _sql(container, build(many))
        assert small == large
        assert len(small_params) == len(large_params) <= 4


def test_the_sets_select_exactly_their_items_through_the_primary_key(
    container: Container,
) -> None:
    pg = container.stores.main.dialect.name == "postgresql"
    homes = [make_home(container, tag=f"idset{n}") for n in range(2)]
    made = [seed_media(container, home) for home in homes]
    chosen = [(homes[0].household_id, made[0]["voice"][0])]
    chosen += [(homes[1].household_id, i) for i in made[1]["video"]]
    # The same item id under another household is not the item.
    stray = [(homes[1].household_id, made[0]["voice"][1])]
    where = pair_in(MediaItem.household_id, MediaItem.id, chosen + stray, postgresql=pg)
    with container.stores.session() as s:
        found = set(s.execute(select(MediaItem.household_id, MediaItem.id).where(where)).all())
        assert found == set(chosen)
        by_id = s.scalar(
            select(func.count())
            .select_from(MediaItem)
            .where(any_of(MediaItem.id, [i for _, i in chosen], postgresql=pg))
        )
        assert by_id == len(chosen)
        assert s.scalar(select(func.count()).where(any_of(MediaItem.id, [], postgresql=pg))) == 0

    plan = _plan(container, select(MediaItem.kind).where(where))
    if pg:
        assert "Seq Scan on items" not in plan, plan
    else:
        assert "SCAN items" not in plan and "SEARCH items" in plan, plan
