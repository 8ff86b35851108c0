"""Engines, sessions, the declarative bases and the migrations of both stores."""
