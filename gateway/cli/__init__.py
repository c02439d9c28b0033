"""The `tollgate` command: one module per command group, what they share in helpers.py."""

from gateway.cli.main import main

__all__ = ["main"]
