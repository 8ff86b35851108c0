"""exports: requested copies of a profile's data (C6)

One row per export: counts, sizes, times and the ids of its sealed package (an item key
under the profile, a blob under the profile's prefix), no personal content. Keyed by
household and profile, so a profile's or a household's erasure removes them.

Revision ID: 4bee19ecd0af
Revises: 3bc9a6b2485c
Create Date: 2026-12-07 22:49:01.660687
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4bee19ecd0af"
down_revision: str | Sequence[str] | None = "3bc9a6b2485c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("items_total", sa.Integer(), nullable=False),
        sa.Column("items_done", sa.Integer(), nullable=False),
        sa.Column("package_id", sa.Uuid(), nullable=True),
        sa.Column("blob_key", sa.String(length=200), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sealed_size", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("erasure_request_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id", "profile_id"],
            ["profiles.household_id", "profiles.id"],
            name=op.f("fk_exports_household_id_profile_id_profiles"),
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index("ix_exports_due", ["state", "expires_at"], unique=False)
        batch_op.create_index(
            "ix_exports_household_account",
            ["household_id", "requested_by", "requested_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_exports_household_package",
            ["household_id", "profile_id", "package_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index("ix_exports_household_package")
        batch_op.drop_index("ix_exports_household_account")
        batch_op.drop_index("ix_exports_due")

    op.drop_table("exports")
