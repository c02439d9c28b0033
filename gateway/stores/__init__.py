"""Shared state behind small Protocols: embedded (in-process, SQLite) and shared (Redis, SQL)."""
