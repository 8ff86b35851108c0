"""Consent freshness: every change to the ledger tells the checkers' caches (C6).

On PostgreSQL, the subject index also carries `granted` and `notice_version` (checks
read the index alone), and a trigger NOTIFYs `tutela_consent` once per changed profile when a
statement appends or deletes consent events; a statement that appends a withdrawal
first takes a transaction-long advisory lock and a number from
`consent_withdrawal_seq`, so withdrawals are numbered in the order they commit, and the
number travels in the notification. `consent_checkers` holds each checking process's
lease and the last withdrawal it has acknowledged. On SQLite, a trigger writes a fresh
value into the one row of `consent_clock`, which a checker reads before each answer.

Revision ID: 6dfa3bd99360
Revises: 4bee19ecd0af
Create Date: 2026-12-07 23:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tutela.core.types

revision: str = "6dfa3bd99360"
down_revision: str | Sequence[str] | None = "4bee19ecd0af"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITHDRAWAL_LOCK = 7_305_110_611
"""The advisory lock key that orders withdrawals (`consent/freshness.py` names it too)."""


def upgrade() -> None:
    op.create_table(
        "consent_checkers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("acked", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", tutela.core.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_checkers")),
    )
    op.create_table(
        "consent_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_clock")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # What a decision needs rides in the index: checks read no table pages.
        op.drop_index("ix_consent_events_subject", table_name="consent_events")
        op.create_index(
            "ix_consent_events_subject",
            "consent_events",
            ["household_id", "profile_id", "purpose", "at", "id"],
            postgresql_include=["granted", "notice_version"],
        )
        op.execute("CREATE SEQUENCE consent_withdrawal_seq")
        op.execute(
            """
            CREATE FUNCTION tutela_consent_appended() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                n bigint := 0;
                r record;
            BEGIN
                IF EXISTS (SELECT 1 FROM appended WHERE NOT granted) THEN
                    PERFORM pg_advisory_xact_lock(7305110611);  -- WITHDRAWAL_LOCK
                    n := nextval('consent_withdrawal_seq');
                    PERFORM set_config('tutela.consent_withdrawal', n::text, true);
                END IF;
                FOR r IN SELECT DISTINCT household_id, profile_id FROM appended LOOP
                    PERFORM pg_notify('tutela_consent',
                        n::text || ' ' || r.household_id::text || ' ' || r.profile_id::text);
                END LOOP;
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            """
            CREATE FUNCTION tutela_consent_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                r record;
            BEGIN
                FOR r IN SELECT DISTINCT household_id, profile_id FROM deleted LOOP
                    PERFORM pg_notify('tutela_consent',
                        '0 ' || r.household_id::text || ' ' || r.profile_id::text);
                END LOOP;
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER consent_events_appended AFTER INSERT ON consent_events "
            "REFERENCING NEW TABLE AS appended FOR EACH STATEMENT "
            "EXECUTE FUNCTION tutela_consent_appended()"
        )
        op.execute(
            "CREATE TRIGGER consent_events_deleted AFTER DELETE ON consent_events "
            "REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT "
            "EXECUTE FUNCTION tutela_consent_deleted()"
        )
        return
    # A fresh random value, not a count: a clock row deleted and made again never
    # repeats a value a cache saw.
    op.execute(
        "CREATE TRIGGER consent_events_insert_clock AFTER INSERT ON consent_events "
        "BEGIN INSERT INTO consent_clock (id, stamp) VALUES (1, random()) "
        "ON CONFLICT (id) DO UPDATE SET stamp = random(); END"
    )
    op.execute(
        "CREATE TRIGGER consent_events_delete_clock AFTER DELETE ON consent_events "
        "BEGIN INSERT INTO consent_clock (id, stamp) VALUES (1, random()) "
        "ON CONFLICT (id) DO UPDATE SET stamp = random(); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_events_appended ON consent_events")
        op.execute("DROP TRIGGER IF EXISTS consent_events_deleted ON consent_events")
        op.execute("DROP FUNCTION IF EXISTS tutela_consent_appended()")
        op.execute("DROP FUNCTION IF EXISTS tutela_consent_deleted()")
        op.execute("DROP SEQUENCE IF EXISTS consent_withdrawal_seq")
        op.drop_index("ix_consent_events_subject", table_name="consent_events")
        op.create_index(
            "ix_consent_events_subject",
            "consent_events",
            ["household_id", "profile_id", "purpose", "at", "id"],
        )
    else:
        op.execute("DROP TRIGGER IF EXISTS consent_events_insert_clock")
        op.execute("DROP TRIGGER IF EXISTS consent_events_delete_clock")
    op.drop_table("consent_clock")
    op.drop_table("consent_checkers")
