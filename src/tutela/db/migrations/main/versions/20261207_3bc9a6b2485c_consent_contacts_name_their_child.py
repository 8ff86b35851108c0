"""Consent contacts name the child they ask about (C5): sealed under its key, erased with it.

Revision ID: 3bc9a6b2485c
Revises: 4159ff234d61
Create Date: 2026-12-07 22:52:56.747367
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3bc9a6b2485c"
down_revision: str | Sequence[str] | None = "4159ff234d61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consent_contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("child_profile_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            "ix_consent_contacts_child",
            ["household_id", "child_profile_id", "created_at"],
            unique=False,
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_consent_contacts_household_id_child_profile_id_profiles"),
            "profiles",
            ["household_id", "child_profile_id"],
            ["household_id", "id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("consent_contacts", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_consent_contacts_household_id_child_profile_id_profiles"),
            type_="foreignkey",
        )
        batch_op.drop_index("ix_consent_contacts_child")
        batch_op.drop_column("child_profile_id")
