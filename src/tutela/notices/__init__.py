"""Notices: security notices and sign-in links, queued in an outbox and delivered by mail."""
