"""The response cache: exact and semantic, in front of routing (docs/caching.md)."""
