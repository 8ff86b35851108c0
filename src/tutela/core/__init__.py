"""Shared kernel: clock, ids, the error tree and column types. Imports no part."""
