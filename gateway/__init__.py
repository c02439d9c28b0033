"""Tollgate: an LLM cost-control gateway."""

__version__ = "0.1.0"
