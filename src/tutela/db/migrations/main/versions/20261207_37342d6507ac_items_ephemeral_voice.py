"""items: ephemeral voice (C11)

`items.ephemeral` marks a voice recording used only in place of typed words, whose audio
was never stored, and its transcript; existing rows are not ephemeral. The partial index
`ix_items_ephemeral` (received_at, household_id, id) holds only those rows, so the
retention sweep finds the expired ones without reading other items.

Revision ID: 37342d6507ac
Revises: 52e55869dd21
Create Date: 2026-12-07 22:48:40.312595
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "37342d6507ac"
down_revision: str | Sequence[str] | None = "52e55869dd21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["received_at", "household_id", "id"]
# SQLAlchemy writes the test as `ephemeral = 1` on SQLite, and SQLite uses a partial
# index only for a query that repeats its condition word for word.
POSTGRESQL_WHERE, SQLITE_WHERE = sa.text("ephemeral"), sa.text("ephemeral = 1")


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN with a constant default, in place on both stores: a
    # batch operation would copy the table on SQLite, which the self-referencing foreign
    # key of derived items refuses while foreign keys are on.
    op.add_column(
        "items", sa.Column("ephemeral", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index(
        "ix_items_ephemeral",
        "items",
        COLUMNS,
        unique=False,
        postgresql_where=POSTGRESQL_WHERE,
        sqlite_where=SQLITE_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_items_ephemeral", table_name="items")
    if op.get_bind().dialect.name == "sqlite":
        # DROP COLUMN works in place on SQLite for a column no index or constraint names.
        op.execute("ALTER TABLE items DROP COLUMN ephemeral")
    else:
        op.drop_column("items", "ephemeral")
