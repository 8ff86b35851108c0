"""outbox notices about a profile

A notice that speaks of a profile other than its recipient's (an inactive child's
guardian is told the child's name) records that profile, so the profile's erasure
erases the notice and its mailed copy too. Rows queued before this revision have no
such profile and cannot be given one: their parameters are sealed.

Revision ID: 78a295f34e0f
Revises: 56c6a3ea71be
Create Date: 2026-12-02 19:51:03.532739
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "78a295f34e0f"
down_revision: str | Sequence[str] | None = "56c6a3ea71be"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("about_profile_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_outbox_about", ["household_id", "about_profile_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_household_id_about_profile_id_profiles"),
            "profiles",
            ["household_id", "about_profile_id"],
            ["household_id", "id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_household_id_about_profile_id_profiles"), type_="foreignkey"
        )
        batch_op.drop_index("ix_outbox_about")
        batch_op.drop_column("about_profile_id")
