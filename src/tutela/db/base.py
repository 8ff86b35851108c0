"""Declarative bases: one for the main store, one for the separate key store."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Tables of the main database: metadata and ciphertext, never a usable key."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class KeyBase(DeclarativeBase):
    """Tables of the key store, kept in a database of its own (DESIGN.md, idea 1)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
