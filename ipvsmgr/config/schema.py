"""The JSON Schema: loading it, validating against it, and wording its errors.

A document that fails the schema is walked down to the parts that fail, with
the compiled checks of fastvalidate.py. Only those parts go to jsonschema (the
reference, and the wording of the errors): a mistake in a 10,000 x 10 file
costs what checking the file costs, not jsonschema's 3 s. The same walk takes
the refused values out, so the builders still check the rest of the object they
were in, and tells them what it took out, so they neither trust a default in
its place nor lose track of the object's name (one mistake, one problem).
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ipvsmgr.config.errors import Path, Problem, Report, quote
from ipvsmgr.config.fastvalidate import Check, NodeChecks, compile_schema
from ipvsmgr.config.formats import FORMATS
from ipvsmgr.config.yamlsource import Document

SCHEMA_FILE = "ipvsmgr.schema.json"

# What ipvsadm, keepalived and habit make operators type for an enum value (lower case): the
# value meant, suggested where it is one of the choices.
ENUM_ALIASES = {
    # ipvsadm -m / --masquerading, -g / --gatewaying, -i / --ipip; keepalived lb_kind NAT | DR | TUN
    "m": "nat", "masq": "nat", "masquerade": "nat", "masquerading": "nat",
    "g": "dr", "gate": "dr", "gatewaying": "dr", "droute": "dr", "direct": "dr", "direct-routing": "dr",
    "direct_routing": "dr", "dsr": "dr", "route": "dr", "routing": "dr",
    "i": "tunnel", "tun": "tunnel", "ipip": "tunnel", "gue": "tunnel", "gre": "tunnel", "ip-in-ip": "tunnel",
    "ipinip": "ipip", "ip_in_ip": "ipip",
    "maglev": "mh", "round-robin": "rr", "roundrobin": "rr", "weighted-round-robin": "wrr",
    "least-connection": "lc", "leastconn": "lc", "source-hash": "sh", "destination-hash": "dh",
    # keepalived's checker names
    "http_get": "http", "ssl_get": "https", "tcp_check": "tcp", "misc_check": "script", "dns_check": "dns",
    "smtp_check": "smtp", "udp_check": "udp", "ping_check": "icmp", "ping": "icmp", "exec": "script",
    "inet": "ipv4", "inet6": "ipv6", "v4": "ipv4", "v6": "ipv6",
}  # fmt: skip
# keepalived's (and ipvsadm's) names for our keys: the key meant, suggested where it is allowed.
KEY_ALIASES = {
    "lb_algo": "scheduler", "lb_kind": "forwarding", "real_server": "reals",
    "persistence_timeout": "persistence",
    "delay_loop": "interval", "connect_timeout": "timeout", "connect_port": "port", "bindto": "source",
    "virtual_router_id": "vrid", "virtual_ipaddress": "virtual_addresses", "advert_int": "advert_interval",
    "unicast_src_ip": "source_address", "unicast_peer": "unicast_peers", "track_interface": "track",
    "track_script": "track", "use_vmac": "virtual_mac", "nopreempt": "preempt", "notify_master": "notify",
}  # fmt: skip


@functools.cache
def schema_text() -> str:
    return resources.files("ipvsmgr.config").joinpath(SCHEMA_FILE).read_text()


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(schema_text())  # type: ignore[no-any-return]


@functools.cache
def fast_check() -> Check:
    return compile_schema(schema())


@functools.cache
def _node_checks() -> NodeChecks:
    return NodeChecks(schema())


def _format_checker() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker()
    for name, fn in FORMATS.items():
        checker.checks(name)(fn)
    return checker


def reference_validator() -> Any:
    """jsonschema's validator (imported lazily: it is slow to import)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema(), format_checker=_format_checker())


_validators: dict[int, tuple[Any, Any]] = {}  # id(schema node) -> (node: kept alive, validator)


def _validator(node: dict[str, Any]) -> Any:
    """jsonschema's validator for one node of the schema (its `$ref`s resolve in the whole schema)."""
    hit = _validators.get(id(node))
    if hit is None:
        import jsonschema

        root = schema()
        wrapped = {**node, "$schema": root["$schema"], "$defs": root["$defs"]}
        hit = _validators[id(node)] = (
            node,
            jsonschema.Draft202012Validator(wrapped, format_checker=_format_checker()),
        )
    return hit[1]


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
        return f"string {quote(v)}"
    return f"{type(v).__name__} {quote(v)}"


def suggest(value: Any, choices: list[Any]) -> str | None:
    """The choice an operator most likely meant by `value`: another case, a word from ipvsadm or
    keepalived, or a close spelling."""
    if not isinstance(value, str):
        return None
    words = [c for c in choices if isinstance(c, str)]
    typed = value.strip().lower()
    if typed in words:
        return typed
    alias = ENUM_ALIASES.get(typed)
    if alias in words:
        return alias
    close = difflib.get_close_matches(typed, words, n=1)
    return close[0] if close else None


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
        choices = list(error.validator_value)
        text = f"expected one of {', '.join(map(str, choices))}; got {_describe(v)}"
        meant = suggest(v, choices)
        return f"{text}; did you mean {meant!r}?" if meant is not None else text
    if kind == "minimum":
        return f"{quote(v)} is below the minimum of {error.validator_value}"
    if kind == "maximum":
        return f"{quote(v)} is above the maximum of {error.validator_value}"
    if kind == "uniqueItems":
        return "list items must be unique"
    if kind == "maxLength":
        # not even a quote of it: the long value may be a secret (a BGP password)
        return f"{len(v)} characters, more than the {error.validator_value} allowed here"
    if kind == "minLength":
        return f"{quote(v)} is shorter than {error.validator_value} characters"
    if kind == "pattern":
        return f"{quote(v)} does not match {error.validator_value!r}"
    # jsonschema's own words embed the whole value (a password, an expanded alias): never more than a quote
    return str(error.message).replace(repr(v), quote(v))


def meant_key(key: Any, allowed: list[str]) -> str | None:
    """The key an operator most likely meant by an unknown one: keepalived's name, or a close spelling."""
    meant = KEY_ALIASES.get(str(key).lower())
    if meant in allowed:
        return meant
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return close[0] if close else None


def _unknown_key(key: Any, allowed: list[str]) -> str:
    msg = f"unknown key {quote(key)}"
    meant = meant_key(key, allowed)
    if meant is not None:
        return f"{msg}; did you mean {meant!r}?"
    return f"{msg}; valid keys here: {', '.join(allowed)}"


def _forbidden_keys(node: Any) -> set[str]:
    """The keys a `not: {required: ...}` (or `not: {anyOf: [{required: ...}, ...]}`) forbids."""
    if not isinstance(node, dict):
        return set()
    out = set(node.get("required", ()))
    for alt in node.get("anyOf", ()):
        if isinstance(alt, dict):
            out.update(alt.get("required", ()))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _fitting_alternative(error: Any) -> list[Any] | None:
    """The errors of the one alternative of an anyOf that takes a value of this type, if one does."""
    groups: dict[Any, list[Any]] = {}
    for e in error.context:
        groups.setdefault(e.relative_schema_path[0], []).append(e)
    fitting = [
        g
        for g in groups.values()
        if not any(e.validator in ("type", "const", "enum") and not e.relative_path for e in g)
    ]
    return fitting[0] if len(fitting) == 1 else None


def _report_error(report: Report, error: Any, prefix: Path) -> None:
    """The problems one jsonschema error makes, each at the node to fix."""
    path = prefix + tuple(error.absolute_path)
    v = error.instance
    if error.validator == "anyOf" and error.context:
        group = _fitting_alternative(error) if isinstance(v, dict) else None
        # our own wording says what the choices are; a misspelt key still gets its suggestion
        if (
            group is not None
            and "x-error" in error.schema
            and not any(e.validator == "additionalProperties" and not e.relative_path for e in group)
        ):
            group = None
        if group is not None:
            # a mapping where a mapping may go: what is wrong inside it, not the alternatives
            unknown = {
                (tuple(e.absolute_path), meant_key(k, list(e.schema.get("properties", {}))))
                for e in group
                if e.validator == "additionalProperties" and isinstance(e.instance, dict)
                for k in e.instance
                if k not in e.schema.get("properties", {})
            }
            for e in group:
                at = tuple(e.absolute_path)
                if e.validator == "required" and any(
                    p == at and e.message.startswith(f"{k!r} ") for p, k in unknown
                ):
                    continue  # reported as the misspelt key
                _report_error(report, e, prefix)
            return
        if "x-error" not in error.schema:
            # no wording of our own: report the alternative that got furthest
            # into the value (for `false or a mapping`, the mapping's own error)
            furthest = max(
                error.context, key=lambda e: (len(e.absolute_path), e.validator not in ("const", "type"))
            )
            _report_error(report, furthest, prefix)
            return
    if error.validator == "additionalProperties" and isinstance(v, dict):
        allowed = list(error.schema.get("properties", {}))
        for k in v:
            if k not in allowed:
                report.add(path + (k,), _unknown_key(k, allowed), key=True)
        return
    if error.validator == "not" and isinstance(v, dict):
        keys = [k for k in v if k in _forbidden_keys(error.validator_value)]
        for k in keys:  # point at each key that must go, not at the object
            report.add(path + (k,), _word(error), key=True)
        if keys:
            return
    if error.validator == "uniqueItems" and isinstance(v, list):
        for j, b in enumerate(v):
            first = next((i for i in range(j) if _same(v[i], b)), None)
            if first is not None:
                line = report.line_of(path + (first,))
                report.add(
                    path + (j,),
                    f"{quote(b)} is already in this list on line {line}: list items must be unique",
                )
                return
    report.add(path, _word(error))


def reference_problems(doc: Document) -> list[Problem]:
    """Every schema problem, from jsonschema over the whole document (slow; for tests)."""
    report = Report()
    for error in reference_validator().iter_errors(doc.data):
        _report_error(report, error, ())
    return report.resolve(doc)[0]


@dataclass
class Checked:
    """The schema's verdict on a document, and the data the builders may trust.

    `data` is the document with every value the schema refused taken out of its
    mapping (a copy where something was taken out). An item of a list of objects
    that cannot be repaired stays in its list (the paths of its siblings must not
    move) and is named in `refused`: skipped by the builders, but still known by
    its name so that references to it stay quiet.
    """

    data: Any = None
    dropped: set[Path] = field(default_factory=set)  # keys taken out: their defaults are not what was meant
    refused: set[Path] = field(default_factory=set)  # objects the builders skip
    partial: dict[Path, dict[str, Any]] = field(default_factory=dict)  # refused objects minus their bad keys

    _tainted: set[Path] | None = field(default=None, repr=False)

    def taken(self, path: Path) -> set[Any]:
        """The keys (or indexes) under `path` whose values were taken out or refused."""
        n = len(path)
        return {p[n] for p in (*self.dropped, *self.refused) if len(p) > n and p[:n] == path}

    def ok(self, path: Path) -> bool:
        """True when no part of the value at `path` was taken out or refused."""
        if not self.dropped and not self.refused:
            return True
        if self._tainted is None:
            self._tainted = {p[:i] for p in (*self.dropped, *self.refused) for i in range(len(p) + 1)}
        return path not in self._tainted


class Names:
    """The names the objects of one kind have in the file, for the references to them.

    An object the schema refused still has its name here. When a name itself was
    refused, `complete` is False: a reference to no known name may be to that
    object, so it is not reported.
    """

    def __init__(self) -> None:
        self.known: dict[str, None] = {}  # in file order
        self.complete = True
        self.count = 0  # objects, named or not

    def add(self, name: Any) -> None:
        self.count += 1
        if isinstance(name, str):
            self.known[name] = None
        else:
            self.complete = False

    def __contains__(self, name: object) -> bool:
        return name in self.known

    def missing(self, name: Any) -> bool:
        """A reference to `name` names nothing (and it cannot be a name the schema refused)."""
        return self.complete and name not in self.known

    def listing(self) -> str:
        return ", ".join(sorted(self.known)) or "none"


class _Refused:
    """What the walk returns for a value it cannot repair: the mapping without its bad keys, if any."""

    def __init__(self, partial: dict[str, Any] | None = None) -> None:
        self.partial = partial


_STRUCTURE = frozenset({"properties", "additionalProperties", "items", "$defs"})
_ANNOTATIONS = frozenset({"description", "title", "$comment", "default", "examples", "x-error"})


class _Walk:
    def __init__(self, report: Report) -> None:
        self.problems = report
        self.root = schema()
        self.check = _node_checks()
        self.out = Checked()
        self._shallow: dict[int, tuple[Any, dict[str, Any]]] = {}

    def resolve(self, node: Any) -> Any:
        """Follow a `$ref` that has nothing but annotations beside it."""
        while isinstance(node, dict) and "$ref" in node and set(node) - {"$ref"} <= _ANNOTATIONS:
            target: Any = self.root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        return node

    def shallow(self, node: dict[str, Any]) -> dict[str, Any]:
        """The node without what it says about its children: the object's or list's own rules."""
        hit = self._shallow.get(id(node))
        if hit is None:
            s = {k: v for k, v in node.items() if k not in _STRUCTURE}
            if "properties" in node or "additionalProperties" in node:
                s["properties"] = {k: {} for k in node.get("properties", {})}
                s["additionalProperties"] = node.get("additionalProperties", True) is not False
            hit = self._shallow[id(node)] = (node, s)
        return hit[1]

    def report(self, value: Any, node: dict[str, Any], path: Path, meant: Collection[str] = ()) -> None:
        """jsonschema's errors on `value`; none about the keys in `meant` (misspelt, and reported as such)."""
        conditional = set(meant) & set(node.get("if", {}).get("required", ()))
        for error in _validator(node).iter_errors(value):
            if meant and not error.absolute_path:
                if error.validator == "required" and any(error.message.startswith(f"{k!r} ") for k in meant):
                    continue  # `vird:` is reported as an unknown key: not `vrid` missing besides
                if (
                    conditional
                    and error.relative_schema_path
                    and error.relative_schema_path[0] in ("then", "else")
                ):
                    continue  # `fwmarkx:`: whether it is a fwmark service is unknown
            _report_error(self.problems, error, path)

    def walk(self, value: Any, node: Any, path: Path, report: bool, checked: bool = False) -> Any:
        """`value` repaired (itself when valid), or _Refused; reports what jsonschema says on the way."""
        node = self.resolve(node)
        if not isinstance(node, dict):
            return value if node is not False else _Refused()
        if "items" in node and isinstance(value, list):
            return self.walk_list(value, node, path, report)
        if not checked and self.check(node)(value):
            return value
        if ("properties" in node or "additionalProperties" in node) and isinstance(value, dict):
            return self.walk_mapping(value, node, path, report)
        if "anyOf" in node and isinstance(value, dict):
            if report:
                self.report(value, node, path)
            for alt in map(self.resolve, node["anyOf"]):
                if isinstance(alt, dict) and "properties" in alt:
                    repaired = self.walk_mapping(value, alt, path, report=False)
                    if not isinstance(repaired, _Refused) and self.check(node)(repaired):
                        return repaired
                    break
            return _Refused()
        if report:
            self.report(value, node, path)
        return _Refused()

    def walk_list(self, value: list[Any], node: dict[str, Any], path: Path, report: bool) -> Any:
        own = self.shallow(node)
        whole = self.check(own)(value)
        if not whole and report:
            self.report(value, own, path)
        items = self.resolve(node["items"])
        objects = isinstance(items, dict) and "properties" in items
        out = value
        lost = False
        for i, item in enumerate(value):
            repaired = self.walk(item, items, path + (i,), report)
            if isinstance(repaired, _Refused):
                lost = True
                if objects:
                    self.out.refused.add(path + (i,))
                    if repaired.partial is not None:
                        self.out.partial[path + (i,)] = repaired.partial
            elif repaired is not item:
                if out is value:
                    out = list(value)
                out[i] = repaired
        if not whole or (lost and not objects):
            return _Refused()  # a list of scalars with a bad item: the whole list is unknown
        return out

    def walk_mapping(self, value: dict[str, Any], node: dict[str, Any], path: Path, report: bool) -> Any:
        own = self.shallow(node)
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        # a misspelt key: the key it stands for is unknown too (its default is not what was meant)
        meant = set()
        if extra is False:
            for k in value:
                if k not in props:
                    m = meant_key(k, list(props))
                    if m is not None and m not in value:
                        meant.add(m)
                        self.out.dropped.add(path + (m,))
        if report and not self.check(own)(value):
            self.report(value, own, path, meant)
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = props.get(k, extra)
            repaired = self.walk(v, sub, path + (k,), report)
            if not isinstance(repaired, _Refused):
                out[k] = repaired
            elif not path and repaired.partial is not None:
                # a section missing a required key: its builder still checks what is there
                out[k] = repaired.partial
                self.out.refused.add((k,))
            else:
                self.out.dropped.add(path + (k,))
        if self.check(own)(out):
            return out
        # keys the branch of an if/then/else forbids (a fwmark service's port) go too
        for branch in ("then", "else"):
            if branch in node and (self.check(node["if"])(out) == (branch == "then")):
                for k in _forbidden_keys(node[branch].get("not")):
                    if k in out:
                        del out[k]
                        self.out.dropped.add(path + (k,))
        return out if self.check(own)(out) else _Refused(out)


def validate(doc: Document, report: Report) -> Checked:
    """Every schema problem of the document (into `report`), and its data with the refused values
    taken out."""
    w = _Walk(report)
    data = doc.data
    if not isinstance(data, dict):
        w.walk(data, w.root, (), report=True)
        w.out.data = {}
        return w.out
    # each section is checked once, on the way down (no whole-document check first)
    repaired = w.walk(data, w.root, (), report=True, checked=True)
    w.out.data = repaired if isinstance(repaired, dict) else (repaired.partial or {})
    return w.out


@functools.cache
def fast_def_check(name: str) -> Check:
    """The compiled check of one `$defs` entry."""
    return compile_schema(schema(), name)
