"""Values that satisfy a JSON Schema, deterministically from a seed: what the simulator answers
structured-output requests (`response_format: json_schema`) and tool calls with.

Clients check what they get (LangChain's `with_structured_output` parses it into a pydantic
model), so the value must validate: types, `required`, `enum`/`const`, `items`, bounds,
`anyOf`/`oneOf`/`allOf` and local `$ref`s (`#/$defs/...`, `#/definitions/...`), which is what
pydantic and zod emit. Optional properties are filled too; nothing outside `properties` is
added.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from gateway.sim.text import VOCABULARY

_MAX_DEPTH = 12
_SHALLOW = 3  # past this depth, optional recursion (a nullable or empty branch) ends


def value_for(schema: Any, seed: int, root: Mapping[str, Any] | None = None) -> Any:
    """A JSON value valid against `schema` (an unusable schema gives a short string)."""
    rng = random.Random(seed)
    return _value(schema, rng, root if root is not None else schema, 0)


def _value(schema: Any, rng: random.Random, root: Any, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return _words(rng, 2)
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, Mapping) and _is_null(o))]
            if depth >= _SHALLOW and len(usable) < len(options):
                return None  # a recursive model (`manager: Person | None`) ends here
            return _value((usable or options)[0], rng, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                merged = _merge(merged, part)
        return _value(merged, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if kinds and (depth < _SHALLOW or len(kinds) == len(kind)) else "null"
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BY_TYPE.get(kind, _string)(schema, rng, root, depth)


def _resolve(ref: Any, root: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {**out.get(key, {}), **value}
        elif key == "required" and isinstance(value, list):
            out[key] = [*out.get(key, []), *value]
        else:
            out[key] = value
    return out


def _object(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {name: _value(sub, rng, root, depth + 1) for name, sub in properties.items()}


def _array(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low = _int(schema.get("minItems"), 1 if depth < _SHALLOW else 0)
    high = max(low, _int(schema.get("maxItems"), low + 2))
    if depth >= _SHALLOW:
        high = low
    count = min(rng.randint(low, high), low + 8)
    items = schema.get("items", {})
    return [_value(items, rng, root, depth + 1) for _ in range(count)]


def _string(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    if fmt == "email":
        return "user@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com/"
    if fmt == "uuid":
        return "00000000-0000-4000-8000-000000000000"
    text = _words(rng, 3)
    low, high = _int(schema.get("minLength"), 0), schema.get("maxLength")
    if len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _integer(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low, high = _bounds(schema, 0, 100)
    return rng.randint(int(low), int(max(low, high)))


def _number(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    low, high = _bounds(schema, 0, 100)
    return round(rng.uniform(low, max(low, high)), 2)


def _bounds(schema: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
    maximum = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        low = minimum + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
        high = max(high, low)
    if isinstance(maximum, int | float) and not isinstance(maximum, bool):
        high = maximum - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
        low = min(low, high)
    return low, high


def _boolean(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    return rng.random() < 0.5


def _null(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> Any:
    return None


def _is_null(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "null"


def _int(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _words(rng: random.Random, count: int) -> str:
    return "".join(rng.choices(VOCABULARY, k=count)).strip()


_BY_TYPE = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
}
