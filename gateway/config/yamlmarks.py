"""YAML to plain data, remembering where every key and value sits so errors can say file:line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.errors import Fault

Path = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$\{")


@dataclass(frozen=True, slots=True)
class Mark:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Located:
    """Parsed YAML data plus the position of every path in it."""

    file: str
    data: Any
    marks: Mapping[Path, Mark]  # where each value starts
    key_marks: Mapping[Path, Mark] = field(default_factory=dict)  # where each mapping key is

    def real_path(self, path: Path) -> Path:
        """`path` without the parts pydantic adds that the file does not have (union tags),
        keeping the last part (a missing key is not in the file either)."""
        out: Path = ()
        for i, part in enumerate(path):
            if (*out, part) in self.marks or i == len(path) - 1:
                out = (*out, part)
        return out

    def where(self, path: Path, *, at_key: bool = False) -> str:
        """`file:line:col` of the deepest node of `path` in the file: its value, or its key."""
        best = self.marks.get((), Mark(1, 1))
        found: Path = ()
        for part in path:
            candidate = (*found, part)
            if candidate in self.marks:
                found = candidate
                best = self.marks[candidate]
        if at_key and found == path and path in self.key_marks:
            best = self.key_marks[path]
        return f"{self.file}:{best.line}:{best.column}"


def dotted(loc: tuple[Any, ...]) -> str:
    """A path as ops read it: `models.chat.targets[0].backend`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class YamlProblem(Fault):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def load_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> Located:
    """Parses `text`; raises YamlProblem for syntax errors, duplicate keys and unset ${VARS}."""
    environ = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise YamlProblem(where, f"invalid YAML: {exc.problem}") from exc
    if node is None:
        return Located(file, {}, {})
    builder = _Builder(file, environ)
    data = builder.build(node, ())
    return Located(file, data, builder.marks, builder.key_marks)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Walks the composed node tree once, constructing values and recording marks."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.marks: dict[Path, Mark] = {}
        self.key_marks: dict[Path, Mark] = {}
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.marks[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            merged: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:  # `<<: *anchor`: its keys, unless written here
                    merged |= self._merged(value_node, path)
                    continue
                key = self._scalars.construct_object(key_node)
                if not isinstance(key, str):
                    raise YamlProblem(_where(self.file, key_node), f"keys must be strings: {key!r}")
                if key in result:
                    raise YamlProblem(_where(self.file, key_node), f"duplicate key {key!r}")
                result[key] = self.build(value_node, (*path, key))
                self.key_marks[(*path, key)] = _mark(key_node)
            # A merged key is located where its anchor wrote it; the mapping, where it is.
            self.marks[path] = _mark(node)
            return {**merged, **result}
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if "$" in node.value and node.tag == "tag:yaml.org,2002:str":
            return _interpolate(node, self.file, self.env)
        return self._scalars.construct_object(node)

    def _merged(self, node: yaml.Node, path: Path) -> dict[str, Any]:
        """What a merge key brings in: one mapping, or a list of them (earlier ones win)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                raise YamlProblem(_where(self.file, source), "`<<` merges mappings only")
            built = self.build(source, path)
            assert isinstance(built, dict)
            out |= built
        return out


_MERGE = "tag:yaml.org,2002:merge"


def _interpolate(node: yaml.ScalarNode, file: str, env: Mapping[str, str]) -> Any:
    """`${VAR}`, `${VAR:-default}`, `$${` escapes; a plain scalar is re-typed (`${PORT}` -> int)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise YamlProblem(_where(file, node), f"environment variable {name} is not set")

    value = _ENV.sub(substitute, node.value)
    if node.style is None and value != node.value:
        return yaml.safe_load(value) if value.strip() else ""
    return value


def _where(file: str, node: yaml.Node) -> str:
    mark = _mark(node)
    return f"{file}:{mark.line}:{mark.column}"
