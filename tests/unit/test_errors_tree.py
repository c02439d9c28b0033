"""Every exception Tollgate raises belongs to its tree: TollgateError (what a client sees) or
Fault (what goes wrong inside; docs in gateway/errors.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway
from gateway.errors import Fault, TollgateError

# The simulator is its own program: its errors are its HTTP answers (gateway/errors.py says so).
OUTSIDE = {"SimError", "StreamDropped"}


def test_every_exception_class_joins_the_tree() -> None:
    root = Path(gateway.__file__).parent
    strays = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name in OUTSIDE:
                continue
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if bases & {"Exception", "RuntimeError", "LookupError", "ValueError", "OSError"} and (
                node.name not in ("TollgateError", "Fault")
                and not bases & {"Fault", "TollgateError"}
            ):
                strays.append(f"{path.relative_to(root)}: {node.name}")
    assert not strays, strays
    assert not issubclass(Fault, TollgateError) and not issubclass(TollgateError, Fault)
