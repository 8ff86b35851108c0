"""items: subject class and the retention index

Each item records the kind of the profile it is about (adult, child), copied from the
profile, which never changes kind; existing rows are filled from their profile. The
retention sweep then finds what a (kind, subject) rule expires through one index,
`ix_items_retention` (kind, subject_class, captured_at, household_id, id), which
replaces `ix_items_kind_captured`.

Revision ID: 61de02cf31c9
Revises: 78a295f34e0f
Create Date: 2026-12-03 09:12:40.118204
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "61de02cf31c9"
down_revision: str | Sequence[str] | None = "78a295f34e0f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETENTION_COLUMNS = ["kind", "subject_class", "captured_at", "household_id", "id"]


def upgrade() -> None:
    bind = op.get_bind()
    # On SQLite the driver commits DDL as it goes: a run that failed after this step left
    # the column behind, and is simply carried on from here.
    if "subject_class" not in {c["name"] for c in sa.inspect(bind).get_columns("items")}:
        with op.batch_alter_table("items", schema=None) as batch_op:
            batch_op.add_column(sa.Column("subject_class", sa.String(length=8), nullable=True))
    # Every item belongs to a profile (a foreign key), so every row gets a value.
    op.execute(
        "UPDATE items SET subject_class = (SELECT profiles.kind FROM profiles"
        " WHERE profiles.household_id = items.household_id AND profiles.id = items.profile_id)"
    )
    if bind.dialect.name == "sqlite":
        # SQLite cannot make a column NOT NULL in place; a batch operation would copy the
        # table and drop the old one, which the self-referencing foreign key of derived
        # items refuses while foreign keys are on (they are, on every Tutela connection,
        # and cannot be turned off inside the migration's transaction). The column
        # definition in the schema is edited instead, as SQLite documents for changes
        # that leave every stored row valid (every row was just given a value).
        _sqlite_set_not_null("items", "subject_class")
    else:
        op.alter_column("items", "subject_class", existing_type=sa.String(8), nullable=False)
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_kind_captured")
        batch_op.create_index("ix_items_retention", RETENTION_COLUMNS, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_retention")
        batch_op.create_index("ix_items_kind_captured", ["kind", "captured_at"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # DROP COLUMN works in place on SQLite for a column no index or constraint names.
        op.execute("ALTER TABLE items DROP COLUMN subject_class")
    else:
        op.drop_column("items", "subject_class")


def _sqlite_set_not_null(table: str, column: str) -> None:
    """Turn `column VARCHAR(8)` into `column VARCHAR(8) NOT NULL` in the stored schema."""
    bind = op.get_bind()
    missing = bind.execute(
        sa.text(f"SELECT count(*) FROM {table} WHERE {column} IS NULL")  # noqa: S608 (constants)
    ).scalar()
    if missing:
        raise RuntimeError(f"{missing} rows of {table} have no {column}; refusing to continue")
    sql = bind.execute(
        sa.text("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = :name"),
        {"name": table},
    ).scalar()
    before = f"{column} VARCHAR(8)"
    assert isinstance(sql, str) and sql.count(before) == 1, "unexpected items schema"
    after = sql.replace(before, before + " NOT NULL")
    version = bind.execute(sa.text("PRAGMA schema_version")).scalar()
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    bind.execute(
        sa.text("UPDATE sqlite_schema SET sql = :sql WHERE type = 'table' AND name = :name"),
        {"sql": after, "name": table},
    )
    bind.execute(sa.text(f"PRAGMA schema_version = {int(version or 0) + 1}"))
    bind.execute(sa.text("PRAGMA writable_schema = OFF"))
    # O(rows) check of the table's records against its (new) schema, NOT NULL included.
    check = bind.execute(sa.text(f"PRAGMA quick_check({table})")).scalar()
    if check != "ok":
        raise RuntimeError(f"the items table failed its integrity check: {check}")
