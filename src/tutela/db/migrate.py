"""Running the Alembic migrations of both stores from code (CLI, tests, start-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
Store = Literal["main", "keys"]


def alembic_config(store: Store, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / store))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["store"] = store
    return cfg


def upgrade(main_url: str, keys_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config("keys", keys_url), revision)
    command.upgrade(alembic_config("main", main_url), revision)


def downgrade(main_url: str, keys_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config("main", main_url), revision)
    command.downgrade(alembic_config("keys", keys_url), revision)


def check(main_url: str, keys_url: str) -> None:
    """Raise when the models and the migrations disagree (alembic check), on both stores."""
    command.check(alembic_config("main", main_url))
    command.check(alembic_config("keys", keys_url))
