"""staff media accesses and staff access notices

Revision ID: 4159ff234d61
Revises: 37342d6507ac
Create Date: 2026-12-07 22:51:01.319239
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4159ff234d61"
down_revision: str | Sequence[str] | None = "37342d6507ac"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_access_notices",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("policy_sha256", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_staff_access_notices")),
    )
    op.create_table(
        "staff_media_accesses",
        sa.Column("household_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=True),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("staff_role", sa.String(length=32), nullable=False),
        sa.Column("staff_pseudonym", sa.String(length=8), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("ticket", sa.String(length=64), nullable=True),
        sa.Column("policy_id", sa.String(length=128), nullable=False),
        sa.Column("decision_id", sa.Uuid(), nullable=True),
        sa.Column("accessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id", "profile_id"],
            ["profiles.household_id", "profiles.id"],
            name=op.f("fk_staff_media_accesses_household_id_profile_id_profiles"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_members.id"],
            name=op.f("fk_staff_media_accesses_staff_id_staff_members"),
        ),
        sa.PrimaryKeyConstraint("household_id", "id", name=op.f("pk_staff_media_accesses")),
    )
    with op.batch_alter_table("staff_media_accesses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staff_media_accesses_item", ["household_id", "item_id"], unique=False
        )
        batch_op.create_index(
            "ix_staff_media_accesses_profile_time",
            ["household_id", "profile_id", "accessed_at"],
            unique=False,
        )
        batch_op.create_index("ix_staff_media_accesses_time", ["accessed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("staff_media_accesses", schema=None) as batch_op:
        batch_op.drop_index("ix_staff_media_accesses_time")
        batch_op.drop_index("ix_staff_media_accesses_profile_time")
        batch_op.drop_index("ix_staff_media_accesses_item")

    op.drop_table("staff_media_accesses")
    op.drop_table("staff_access_notices")
