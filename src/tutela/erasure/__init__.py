"""Erasure: one deletion path (A5, A8, S6-S8)."""
