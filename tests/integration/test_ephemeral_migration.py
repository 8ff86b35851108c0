"""Migration `37342d6507ac` (C11): items stored before it are not ephemeral, the column is
required, and it goes down and up again with the rows in place, on both stores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Uuid, bindparam, inspect, text

from tutela.db import migrate
from tutela.db.engine import make_engine
from tutela.households.models import Household

BEFORE = "52e55869dd21"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def scratch_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/k.db"
    dbs = request.getfixturevalue("pg_databases")
    tag = f"tutela_eph_{uuid.uuid4().hex[:8]}"
    return dbs.create(tag), dbs.create(tag + "_keys")


def test_existing_items_are_not_ephemeral_and_the_migration_goes_down_and_up(
    scratch_urls: tuple[str, str],
) -> None:
    main, keys = scratch_urls
    command.upgrade(migrate.alembic_config("keys", keys), "head")
    command.upgrade(migrate.alembic_config("main", main), BEFORE)
    engine = make_engine(main)
    now = datetime.now(UTC)
    household, profile, voice, transcript = (uuid.uuid4() for _ in range(4))
    ids = bindparam("h", type_=Uuid), bindparam("i", type_=Uuid), bindparam("p", type_=Uuid)
    with engine.begin() as conn:
        conn.execute(
            Household.__table__.insert().values(id=household, created_at=now, state="active")
        )
        conn.execute(
            text(
                "INSERT INTO profiles (household_id, id, kind, name_sealed, created_at,"
                " last_active_at, state) VALUES (:h, :i, 'child', :n, :t, :t, 'active')"
            ).bindparams(*ids[:2]),
            {"h": household, "i": profile, "n": b"x", "t": now},
        )
        for item_id, source, kind in ((voice, None, "voice"), (transcript, voice, "transcript")):
            conn.execute(
                text(
                    "INSERT INTO items (household_id, id, profile_id, source_item_id, kind,"
                    " subject_class, media_type, captured_at, received_at, size, content_mac,"
                    " sealed_size, state) VALUES (:h, :i, :p, :s, :k, 'child', 'x', :t, :t, 1,"
                    " :m, 0, 'active')"
                ).bindparams(*ids, bindparam("s", type_=Uuid)),
                {
                    "h": household,
                    "i": item_id,
                    "p": profile,
                    "s": source,
                    "k": kind,
                    "t": now,
                    "m": b"m",
                },
            )
    for _ in range(2):  # up, then down one step and up again
        command.upgrade(migrate.alembic_config("main", main), "head")
        with engine.connect() as conn:
            marks = conn.execute(text("SELECT ephemeral FROM items")).scalars().all()
        assert [bool(m) for m in marks] == [False, False]
        columns = {c["name"]: c for c in inspect(engine).get_columns("items")}
        assert columns["ephemeral"]["nullable"] is False
        assert "ix_items_ephemeral" in {i["name"] for i in inspect(engine).get_indexes("items")}
        command.downgrade(migrate.alembic_config("main", main), BEFORE)
        assert "ephemeral" not in {c["name"] for c in inspect(engine).get_columns("items")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 2
    command.upgrade(migrate.alembic_config("main", main), "head")
    migrate.check(main, keys)
    engine.dispose()
