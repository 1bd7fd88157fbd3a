"""YAML to plain Python values, streaming, with positions found only on demand.

PyYAML's loaders build a node object (with two marks) for every scalar before
constructing values: 409 MB and 5.5 s for a 10,000 x 10 configuration. Building
values straight from the parser's event stream takes 11 MB and 0.7 s. Positions
are only needed to report problems, so they are recovered by a second pass over
the text when (and only when) there is something to report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from ipvsmgr.config.errors import ConfigError, Path, Problem

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
_RESOLVER_FIRST = frozenset(k for k in _resolver.yaml_implicit_resolvers if k is not None)
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"


def _scalar(ev: yaml.ScalarEvent) -> Any:
    value: str = ev.value
    tag = ev.tag
    if tag is None or tag == "!":
        if ev.style:  # quoted or block scalars are strings
            return value
        # Fast paths for the bulk of a large file (keys, names, addresses, ports):
        # no implicit resolver starts with this character, or a plain decimal.
        if value and value[0] not in _RESOLVER_FIRST:
            return value
        if value.isdigit() and (value[0] != "0" or value == "0"):
            return int(value)
        tag = _resolver.resolve(yaml.ScalarNode, value, ev.implicit)  # type: ignore[no-untyped-call]
    if tag in (_STR, _MERGE):
        return value  # a merge key comes back as "<<" and is refused by the builder
    if tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
        return int(value)
    if tag == "tag:yaml.org,2002:timestamp":
        return value  # a date is never meaningful here; keep the text
    return _constructor.construct_object(yaml.ScalarNode(tag, value, style=ev.style))  # type: ignore[no-untyped-call]


def _mark(m: Any) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


class _Builder:
    """Turns parser events into dicts/lists; optionally records positions."""

    def __init__(self, filename: str, track: bool) -> None:
        self.filename = filename
        self.track = track
        self.value_pos: dict[Path, tuple[int, int]] = {}
        self.key_pos: dict[Path, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.anchors: dict[str, Any] = {}

    def problem(self, pos: tuple[int, int], msg: str) -> None:
        self.problems.append(Problem(self.filename, pos[0], pos[1], msg))

    def scalar(self, ev: yaml.ScalarEvent) -> Any:
        try:
            return _scalar(ev)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            self.problem(_mark(ev.start_mark), f"cannot read {ev.value!r} as {ev.tag or 'a value'}")
            return ev.value

    def run(self, text: str) -> Any:
        events = yaml.parse(text, Loader=_Loader)
        result: Any = None
        documents = 0
        # stack entries: [container, path, pending_key, pending_key_pos, seen_keys]
        stack: list[list[Any]] = []
        for ev in events:
            if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent)):
                continue
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.problem(_mark(ev.start_mark), "only one YAML document is allowed")
                    break
                continue
            if isinstance(ev, yaml.DocumentEndEvent):
                continue
            if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()[0]
                if not stack:
                    result = done
                continue
            # a node starts: work out where it goes
            top = stack[-1] if stack else None
            if top is not None and isinstance(top[0], dict) and top[2] is _NO_KEY:
                # this node is a mapping key
                if not isinstance(ev, yaml.ScalarEvent):
                    self.problem(_mark(ev.start_mark), "mapping keys must be plain scalars")
                    break
                key = self.scalar(ev)
                if isinstance(key, str):
                    key = sys.intern(key)  # 100,000 reals share three key strings
                elif not isinstance(key, (int, bool)) and key is not None:
                    key = str(key)
                pos = _mark(ev.start_mark)
                if key in top[0] or key in top[4]:
                    self.problem(pos, f"duplicate key {key!r} (the first one is ignored by YAML)")
                top[2] = key
                top[3] = pos
                continue
            if top is None:
                path: Path = ()
            elif isinstance(top[0], dict):
                path = top[1] + (top[2],)
            else:
                path = top[1] + (len(top[0]),)
            if self.track:
                self.value_pos[path] = _mark(ev.start_mark)
                if top is not None and isinstance(top[0], dict):
                    self.key_pos[path] = top[3]
            value: Any
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor not in self.anchors:
                    self.problem(_mark(ev.start_mark), f"unknown alias *{ev.anchor}")
                    value = None
                else:
                    value = self.anchors[ev.anchor]
            elif isinstance(ev, yaml.ScalarEvent):
                value = self.scalar(ev)
            elif isinstance(ev, yaml.MappingStartEvent):
                value = {}
                stack_entry = [value, path, _NO_KEY, None, set()]
            else:
                value = []
                stack_entry = [value, path, None, None, None]
            anchor = getattr(ev, "anchor", None)
            if anchor and not isinstance(ev, yaml.AliasEvent):
                self.anchors[anchor] = value
            if top is not None:
                if isinstance(top[0], dict):
                    if top[2] == "<<":
                        self.problem(top[3], "YAML merge keys (<<) are not supported; repeat the settings")
                    top[0][top[2]] = value
                    top[4].add(top[2])
                    top[2] = _NO_KEY
                else:
                    top[0].append(value)
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append(stack_entry)
            elif top is None:
                result = value
        return result


_NO_KEY = object()


@dataclass
class Document:
    """Parsed YAML plus a lazy map from value paths to source positions."""

    filename: str
    text: str
    data: Any
    _builder: _Builder | None = field(default=None, repr=False)

    def _positions(self) -> _Builder:
        if self._builder is None:
            b = _Builder(self.filename, track=True)
            b.run(self.text)
            self._builder = b
        return self._builder

    def locate(self, path: Path, key: bool = False) -> tuple[int, int]:
        """Line and column of the value at `path` (or of its key), else its nearest parent."""
        b = self._positions()
        table = b.key_pos if key else b.value_pos
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if key:
                table = b.value_pos
                key = False
                continue
            p = p[:-1]
        return b.value_pos.get((), (1, 1))

    def problem(self, path: Path, message: str, key: bool = False) -> Problem:
        line, col = self.locate(path, key)
        return Problem(self.filename, line, col, message)


def parse(text: str, filename: str) -> Document:
    """Parse one YAML document; syntax errors and duplicate keys raise ConfigError."""
    b = _Builder(filename, track=False)
    try:
        data = b.run(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = e.problem or str(e)
        if e.context:
            what = f"{what} ({e.context})"
        raise ConfigError([Problem(filename, line, col, f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(filename, 1, 1, f"YAML error: {e}")]) from None
    if b.problems:
        raise ConfigError(b.problems)
    return Document(filename, text, data)
