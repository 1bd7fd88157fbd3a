"""A yes/no validator compiled from the JSON Schema, for the common valid case.

jsonschema takes 2.6 s (plus a slow import) to accept a 10,000 x 10 file; the
compiled closures below answer "valid?" for the keyword subset our schema uses
in a fraction of that. Only when the answer is "no" does the loader run
jsonschema, the reference implementation, to produce the error messages. A
property test checks that both always agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ipvsmgr.config.formats import FORMATS

Check = Callable[[Any], bool]

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}

# Keywords with no effect on validity.
_ANNOTATIONS = {"$schema", "$comment", "title", "description", "x-error", "$defs", "default", "examples"}


class UnsupportedSchema(ValueError):
    pass


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1, at any depth."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _min_length(n: int) -> Check:
    return lambda v: not isinstance(v, str) or len(v) >= n


def _max_length(n: int) -> Check:
    return lambda v: not isinstance(v, str) or len(v) <= n


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, ref: str) -> Check:
        if ref not in self.refs:
            if not ref.startswith("#/"):
                raise UnsupportedSchema(ref)
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part]
            cell: list[Check] = []
            self.refs[ref] = lambda v: cell[0](v)  # allows recursion
            cell.append(self.compile(node))
            self.refs[ref] = cell[0]
        return self.refs[ref]

    def compile(self, s: dict[str, Any]) -> Check:
        checks: list[Check] = []
        unknown = (
            set(s)
            - _ANNOTATIONS
            - {
                "type",
                "enum",
                "const",
                "minimum",
                "maximum",
                "pattern",
                "format",
                "minLength",
                "maxLength",
                "properties",
                "additionalProperties",
                "required",
                "maxProperties",
                "items",
                "uniqueItems",
                "minItems",
                "anyOf",
                "not",
                "if",
                "then",
                "else",
                "$ref",
            }
        )
        if unknown:
            raise UnsupportedSchema(", ".join(sorted(unknown)))
        if "$ref" in s:
            checks.append(self.ref(s["$ref"]))
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            fns = [_TYPES[t] for t in types]
            checks.append(fns[0] if len(fns) == 1 else lambda v: any(f(v) for f in fns))
        if "enum" in s:
            options = s["enum"]
            if all(isinstance(o, str) for o in options):
                names = frozenset(options)
                checks.append(lambda v: isinstance(v, str) and v in names)
            else:
                checks.append(lambda v: any(_equal(v, o) for o in options))
        if "const" in s:
            const = s["const"]
            checks.append(lambda v: _equal(v, const))
        if "minimum" in s:
            lo = s["minimum"]
            checks.append(lambda v: not _num(v) or v >= lo)
        if "maximum" in s:
            hi = s["maximum"]
            checks.append(lambda v: not _num(v) or v <= hi)
        if "pattern" in s:
            rx = re.compile(s["pattern"])
            checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
        if "format" in s:
            checks.append(FORMATS[s["format"]])
        if "minLength" in s:
            checks.append(_min_length(s["minLength"]))
        if "maxLength" in s:
            checks.append(_max_length(s["maxLength"]))
        if "properties" in s or "additionalProperties" in s or "required" in s or "maxProperties" in s:
            checks.append(self.object_check(s))
        if "items" in s or "uniqueItems" in s or "minItems" in s:
            checks.append(self.array_check(s))
        if "anyOf" in s:
            alts = [self.compile(x) for x in s["anyOf"]]
            checks.append(lambda v: any(a(v) for a in alts))
        if "not" in s:
            inner = self.compile(s["not"])
            checks.append(lambda v: not inner(v))
        if "if" in s:
            cond = self.compile(s["if"])
            then = self.compile(s["then"]) if "then" in s else None
            other = self.compile(s["else"]) if "else" in s else None

            def conditional(v: Any) -> bool:
                if cond(v):
                    return then is None or then(v)
                return other is None or other(v)

            checks.append(conditional)
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda v: first(v) and second(v)

        def every(v: Any) -> bool:  # a loop: cheaper than all() over a generator
            for check in checks:  # noqa: SIM110
                if not check(v):
                    return False
            return True

        return every

    def object_check(self, s: dict[str, Any]) -> Check:
        props = {k: self.compile(v) for k, v in s.get("properties", {}).items()}
        extra = s.get("additionalProperties", True)
        extra_check = self.compile(extra) if isinstance(extra, dict) else None
        required = tuple(s.get("required", ()))
        max_props = s.get("maxProperties")

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            if max_props is not None and len(v) > max_props:
                return False
            for r in required:
                if r not in v:
                    return False
            for k, x in v.items():
                f = props.get(k)
                if f is not None:
                    if not f(x):
                        return False
                elif extra is False or (extra_check is not None and not extra_check(x)):
                    return False
            return True

        return check

    def array_check(self, s: dict[str, Any]) -> Check:
        item = self.compile(s["items"]) if "items" in s else None
        unique = s.get("uniqueItems", False)
        min_items = s.get("minItems", 0)

        def check(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            if len(v) < min_items:
                return False
            if item is not None:
                for x in v:
                    if not item(x):
                        return False
            if unique:
                for i, a in enumerate(v):
                    for b in v[i + 1 :]:
                        if _equal(a, b):
                            return False
            return True

        return check


class NodeChecks:
    """The compiled check of any node of one schema (each compiled once), for walking a document
    down to the parts that fail; `$ref`s resolve against the whole schema."""

    def __init__(self, root: dict[str, Any]) -> None:
        self._compiler = _Compiler(root)
        self._cache: dict[int, tuple[Any, Check]] = {}  # id(node) -> (node: kept alive, check)

    def __call__(self, node: dict[str, Any]) -> Check:
        hit = self._cache.get(id(node))
        if hit is None:
            hit = self._cache[id(node)] = (node, self._compiler.compile(node))
        return hit[1]


def compile_schema(schema: dict[str, Any], definition: str = "") -> Check:
    """The check for the whole schema, or for one entry of its `$defs`."""
    compiler = _Compiler(schema)
    return compiler.ref(f"#/$defs/{definition}") if definition else compiler.compile(schema)
