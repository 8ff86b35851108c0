"""key store

Revision ID: dcf9f02adc87
Revises:
Create Date: 2026-11-29 02:56:03.972949
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dcf9f02adc87"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "item_keys",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("household_id", "item_id", name=op.f("pk_item_keys")),
    )
    with op.batch_alter_table("item_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_item_keys_household_profile", ["household_id", "profile_id"], unique=False
        )

    op.create_table(
        "profile_keys",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("household_id", "profile_id", name=op.f("pk_profile_keys")),
    )
    with op.batch_alter_table("profile_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_profile_keys_master_key_id"), ["master_key_id"], unique=False
        )

    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_keys")),
    )
    with op.batch_alter_table("service_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_keys_master_key_id"), ["master_key_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("service_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_keys_master_key_id"))

    op.drop_table("service_keys")
    with op.batch_alter_table("profile_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_keys_master_key_id"))

    op.drop_table("profile_keys")
    with op.batch_alter_table("item_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_item_keys_household_profile")

    op.drop_table("item_keys")
