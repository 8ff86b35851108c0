"""Shared fixtures: both stores on SQLite and on the real PostgreSQL, built by migrations.

Set TUTELA_TEST_POSTGRES=required (CI does) to fail, not skip, when PostgreSQL is down.
Each test starts from empty tables: rows are deleted after every test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tutela.container import Container, build
from tutela.core.clock import FakeClock
from tutela.db import migrate
from tutela.db.base import Base, KeyBase
from tutela.db.engine import make_engine
from tutela.erasure.intake import Hold
from tutela.erasure.scope import BatchOutcome, Member, Requester
from tutela.settings import Settings

PG_ADMIN_URL = os.environ.get("TUTELA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_REQUIRED = os.environ.get("TUTELA_TEST_POSTGRES", "") == "required"


def _postgres_available() -> bool:
    try:
        engine = make_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception:
        return False
    return True


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


class PgDatabases:
    """Creates and drops throw-away PostgreSQL databases for one test session."""

    def __init__(self) -> None:
        self.admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, name: str) -> str:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return _pg_url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    if not _postgres_available():
        if PG_REQUIRED:
            pytest.fail("PostgreSQL is required (TUTELA_TEST_POSTGRES=required) but unreachable")
        pytest.skip("PostgreSQL is not reachable")
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def store_urls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(main URL, key store URL) of migrated stores of one backend, the breach list seeded."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("stores")
        urls = (f"sqlite:///{folder / 'tutela.db'}", f"sqlite:///{folder / 'keys.db'}")
    else:
        dbs: PgDatabases = request.getfixturevalue("pg_databases")
        tag = f"tutela_test_{os.getpid()}"
        urls = (dbs.create(tag), dbs.create(tag + "_keys"))
    migrate.upgrade(*urls)
    from sqlalchemy.orm import sessionmaker

    from tutela.identity.breached import seed_default

    engine = make_engine(urls[0])
    seed_default(sessionmaker(engine))
    engine.dispose()
    return urls


@pytest.fixture
def backend(store_urls: tuple[str, str]) -> str:
    return "sqlite" if store_urls[0].startswith("sqlite") else "postgresql"


def _empty(engine: Engine, metadata: object) -> None:
    """Delete every row, except the breach store seeded once per session (`store_urls`).

    Tests that add breach ranges use hashes of random strings, so what they leave behind
    never meets another test.
    """
    tables = reversed(metadata.sorted_tables)  # type: ignore[attr-defined]
    with engine.begin() as conn:
        for table in tables:
            if table.name != "breached_ranges":
                conn.execute(table.delete())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(store_urls: tuple[str, str], tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        home=tmp_path,
        database_url=store_urls[0],
        keystore_url=store_urls[1],
        max_upload_bytes=2 * 1024 * 1024,
        # The factory homes have cameras; tests of other parts sign their owners in with a
        # password alone. Tests of R5 turn this back on (tests/functional/test_sign_in_api.py).
        mfa_required_for_camera_viewers=False,
        # Tests run erasure jobs and sweeps themselves, at the fake clock's time; the
        # embedded worker has its own test (tests/functional/test_serve.py).
        embedded_worker=False,
    )


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Iterator[Container]:
    built = build(settings, clock=clock)
    yield built
    _empty(built.stores.main, Base.metadata)
    _empty(built.stores.keys, KeyBase.metadata)
    built.close()


@pytest.fixture
def batch_calls(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Requester, list[Member]]]:
    """Each `container.erasure.request_batch` call as (requester, members), in order; the
    calls still go through."""
    calls: list[tuple[Requester, list[Member]]] = []
    real = container.erasure.request_batch

    def spy(
        members: Sequence[Member], requester: Requester, *, hold: Hold | None = None
    ) -> BatchOutcome:
        calls.append((requester, list(members)))
        return real(members, requester, hold=hold)

    monkeypatch.setattr(container.erasure, "request_batch", spy)
    return calls


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point every `TUTELA_*` setting at the embedded defaults under `home`, nothing else."""
    for var in [v for v in os.environ if v.startswith("TUTELA_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("TUTELA_HOME", str(home))


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]
