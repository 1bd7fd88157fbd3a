"""The JSON Schema: loading it, validating against it, and wording its errors."""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from typing import Any

from ipvsmgr.config.errors import Problem
from ipvsmgr.config.fastvalidate import Check, compile_schema
from ipvsmgr.config.formats import FORMATS
from ipvsmgr.config.yamlsource import Document

SCHEMA_FILE = "ipvsmgr.schema.json"


@functools.cache
def schema_text() -> str:
    return resources.files("ipvsmgr.config").joinpath(SCHEMA_FILE).read_text()


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(schema_text())  # type: ignore[no-any-return]


@functools.cache
def fast_check() -> Check:
    return compile_schema(schema())


def reference_validator() -> Any:
    """jsonschema's validator (imported lazily: it is slow to import)."""
    import jsonschema

    checker = jsonschema.FormatChecker()
    for name, fn in FORMATS.items():
        checker.checks(name)(fn)
    return jsonschema.Draft202012Validator(schema(), format_checker=checker)


def _describe(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, str):
        return f"string {v!r}"
    return f"{type(v).__name__} {v!r}"


def _word(error: Any) -> str:
    """An operator-facing sentence for one jsonschema error."""
    custom = error.schema.get("x-error") if isinstance(error.schema, dict) else None
    kind = error.validator
    v = error.instance
    if kind == "required":
        return str(error.message).replace("is a required property", "is required here")
    if custom:
        return f"{custom} (got {_describe(v)})" if not isinstance(v, dict) else str(custom)
    if kind == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"expected {want}, got {_describe(v)}"
    if kind == "enum":
        return f"expected one of {', '.join(map(str, error.validator_value))}; got {_describe(v)}"
    if kind == "minimum":
        return f"{v!r} is below the minimum of {error.validator_value}"
    if kind == "maximum":
        return f"{v!r} is above the maximum of {error.validator_value}"
    if kind == "uniqueItems":
        return "list items must be unique"
    return str(error.message)


def validate(doc: Document) -> list[Problem]:
    """All schema problems of the document; empty when it conforms."""
    if fast_check()(doc.data):
        return []
    problems: list[Problem] = []
    for error in reference_validator().iter_errors(doc.data):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for key in error.instance:
                if key in allowed:
                    continue
                msg = f"unknown key {key!r}"
                close = difflib.get_close_matches(str(key), allowed, n=1)
                if close:
                    msg += f"; did you mean {close[0]!r}?"
                else:
                    msg += f"; valid keys here: {', '.join(allowed)}"
                problems.append(doc.problem(path + (key,), msg, key=True))
            continue
        if error.validator == "anyOf" and error.context and "x-error" not in error.schema:
            # no wording of our own: report the alternative that got furthest
            # into the value (for `false or a mapping`, the mapping's own error)
            error = max(
                error.context, key=lambda e: (len(e.absolute_path), e.validator not in ("const", "type"))
            )
            path = tuple(error.absolute_path)
        problems.append(doc.problem(path, _word(error)))
    return problems


@functools.cache
def fast_def_check(name: str) -> Check:
    """The compiled check of one `$defs` entry, to skip parts that failed the schema."""
    return compile_schema(schema(), name)
