"""Exports: a copy of a profile's data that a parent or an adult downloads (C6, C7)."""
