"""YAML to plain Python values, streaming, with positions found only on demand.

PyYAML's loaders build a node object (with two marks) for every scalar before
constructing values: 409 MB and 5.5 s for a 10,000 x 10 configuration. Building
values straight from the parser's event stream takes 11 MB and 0.7 s. Positions
are only needed to report problems, so they are recovered by a second pass over
the text when (and only when) there is something to report, for the paths
reported only (errors.Report asks for all of them at once).

Aliases share the anchored value (no copy), but the schema check and the builder
walk the expanded tree, so the nodes aliases add are bounded (ALIAS_BUDGET) and an
alias may not name a node it sits in. Plain scalars that YAML 1.1 (PyYAML) and
YAML 1.2 read differently are never read silently as YAML 1.1 does: see _Resolver.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ipvsmgr.config.errors import ConfigError, Path, Problem, quote

# The nodes that aliases may add to a document: an alias adds as many as the node it
# names holds (a scalar 1, a list 1 + its items', a mapping 1 + its keys' and values').
# Aliases cannot make a tree larger than writing it out: the design's largest file,
# 10,000 virtual servers x 10 reals, is 0.8M nodes written out, and its most
# alias-heavy sensible form (every server takes one shared pool of 10 reals, each
# real one shared health check: tests/unit/test_yaml_hostile.py) adds 3.0M and loads
# in 2.5 s. 5M stays clear of that while bounding what the schema check and the
# builder walk to seconds; a billion laughs (10**9 nodes) is refused at its 54th
# alias, in milliseconds, before anything walks it.
ALIAS_BUDGET = 5_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_YAML = "tag:yaml.org,2002:"
_OCTAL = "tag:ipvsmgr,2025:yaml-1.1-octal"
_BASE60 = "tag:ipvsmgr,2025:yaml-1.1-base-60"
_BOOL_WORD = "tag:ipvsmgr,2025:yaml-1.1-boolean-word"
_YAML11_ONLY = frozenset((_OCTAL, _BASE60, _BOOL_WORD))


class _Resolver(yaml.resolver.Resolver):
    """PyYAML's (YAML 1.1) implicit types, with the plain scalars YAML 1.2 reads differently tagged apart.

    YAML 1.1 reads 0443 as 291 (octal), 1:20 as 80 (base 60) and yes/no/on/off/y/n
    as booleans; YAML 1.2 reads 443, the text '1:20' and the text 'yes'. Base 60
    and the words are read as the text written, as YAML 1.2 does, because text is
    valid in places: BGP communities (65000:10), a full-form IPv6 address
    (2001:1:2:3:4:5:6:7), a script's argv and environment (VERBOSE: yes). Where the
    schema wants a number or a boolean it refuses the text, and Document.problem
    says what YAML 1.1 would have read. A leading-zero integer is refused: it
    means two different numbers, and nobody means it as text.
    """


_Resolver.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    # YAML 1.1's booleans but true and false (y and n too: the spec has them, PyYAML not)
    (_BOOL_WORD, r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF", "yYnNoO"),
    (_OCTAL, r"[-+]?0[0-7_]*[1-7][0-7_]*", "-+0"),  # 00 is 0 in both
    (_BASE60, r"[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+", "-+123456789"),  # 1:20, 190:20:30
    (_BASE60, r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*", "-+0123456789"),  # 1:20.5
):
    _regexp = re.compile(f"^(?:{_pattern})$")
    for _ch in _first:  # ahead of PyYAML's own bool, int and float resolvers
        _Resolver.yaml_implicit_resolvers.setdefault(_ch, []).insert(0, (_tag, _regexp))

_resolver = _Resolver()
_constructor = yaml.constructor.SafeConstructor()
_RESOLVER_FIRST = frozenset(k for k in _resolver.yaml_implicit_resolvers if k is not None)


class _Yaml11(Exception):
    """A plain scalar that YAML 1.1 reads differently from YAML 1.2: args are (tag, text)."""


# Hex, binary and tagged integers have no length limit of their own (decimal ones stop
# at Python's 4,300 digits), and printing one past 4,300 digits (repr in a message)
# raises. No setting takes more than 64 bits; 4096 is far past any and still prints.
_MAX_INT_BITS = 4096


class _TooLarge(ValueError):
    """An integer with more than _MAX_INT_BITS bits: args are (bits,)."""


def _octal_problem(text: str) -> str:
    if len(text) > 30:
        return f"{quote(text)} is octal in YAML 1.1, decimal in YAML 1.2; drop the leading zeros, or quote it"
    digits = text.replace("_", "")
    sign = -1 if digits[0] == "-" else 1
    digits = digits.lstrip("+-")
    return f"{text} is octal in YAML 1.1 (= {sign * int(digits, 8)}); write {sign * int(digits)}, or quote it"


def _text_note(tag: str, text: str) -> str:
    """What a problem about this text should add: how YAML 1.1 would have read it."""
    if tag == _BOOL_WORD:
        meaning = "true" if text.lower() in ("y", "yes", "on") else "false"
        return (
            f"{text} is text here, as in YAML 1.2 (YAML 1.1 reads it as {meaning}):"
            " for a boolean write true or false"
        )
    if len(text) > 30:
        return f"{quote(text)} is text here, as in YAML 1.2 (YAML 1.1 reads it as a base-60 number)"
    number = _constructor.construct_object(yaml.ScalarNode(_FLOAT if "." in text else _INT, text))  # type: ignore[no-untyped-call]
    return (
        f"{text} is text here, as in YAML 1.2 (YAML 1.1 reads it as the base-60 number {number}):"
        f" for the number write {number}"
    )


def _short(name: str) -> str:
    """An anchor or tag name, cut like a quoted value."""
    if name.startswith(_YAML):
        name = "!!" + name[len(_YAML) :]
    return name if len(name) <= 80 else name[:77] + "..."


def _plain_decimal(value: str) -> bool:
    # ASCII only: str.isdigit() is also true of "²" and other digits int() refuses
    return value.isascii() and value.isdigit() and (value[0] != "0" or value == "0")


def _scalar(ev: yaml.ScalarEvent) -> Any:
    value: str = ev.value
    tag = ev.tag
    if tag is None or tag == "!":
        if ev.style:  # quoted or block scalars are strings
            return value
        # Fast paths for the bulk of a large file (keys, names, addresses, ports):
        # no implicit resolver starts with this character, a plain decimal, or a
        # dotted quad (no implicit type has two dots).
        if value and value[0] not in _RESOLVER_FIRST:
            return value
        if _plain_decimal(value):
            return int(value)
        if value.count(".") > 1:
            return value
        tag = _resolver.resolve(yaml.ScalarNode, value, ev.implicit)  # type: ignore[no-untyped-call]
        if tag in _YAML11_ONLY:
            raise _Yaml11(tag, value)
    if tag in (_STR, _MERGE):
        return value  # a merge key comes back as "<<" and is refused by the builder
    if tag == _INT and _plain_decimal(value):
        return int(value)
    if tag == "tag:yaml.org,2002:timestamp":
        return value  # a date is never meaningful here; keep the text
    result = _constructor.construct_object(yaml.ScalarNode(tag, value, style=ev.style))  # type: ignore[no-untyped-call]
    if type(result) is int and result.bit_length() > _MAX_INT_BITS:
        raise _TooLarge(result.bit_length())
    return result


def _mark(m: Any) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


@dataclass(slots=True)
class _Anchor:
    value: Any
    line: int
    start: int  # nodes counted before this one
    size: int | None = None  # nodes in it, aliases expanded; None while it is still open
    note: str | None = None  # a scalar read as text: what YAML 1.1 would have read


class _Builder:
    """Turns parser events into dicts/lists."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.anchors: dict[str, _Anchor] = {}
        self.notes: dict[Path, str] = {}  # values read as text where YAML 1.1 reads something else

    def problem(self, pos: tuple[int, int], msg: str) -> None:
        self.problems.append(Problem(self.filename, pos[0], pos[1], msg))

    def scalar(self, ev: yaml.ScalarEvent, path: Path | None = None) -> Any:
        try:
            return _scalar(ev)
        except _Yaml11 as e:
            tag, text = e.args
            if tag == _OCTAL:
                self.problem(_mark(ev.start_mark), _octal_problem(text))
            elif path is not None:
                self.notes[path] = _text_note(tag, text)
            return text
        except _TooLarge as e:
            self.problem(
                _mark(ev.start_mark),
                f"{quote(ev.value)} is a {e.args[0]}-bit number; no setting takes one that large",
            )
            return ev.value
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            what = _short(ev.tag) if ev.tag else "a value"
            self.problem(_mark(ev.start_mark), f"cannot read {quote(ev.value)} as {what}")
            return ev.value

    def key(self, ev: yaml.ScalarEvent) -> Any:
        key = self.scalar(ev)
        if isinstance(key, str):
            return sys.intern(key)  # 100,000 reals share three key strings
        if not isinstance(key, (int, bool)) and key is not None:
            return str(key)
        return key

    def run(self, text: str) -> Any:
        events = yaml.parse(text, Loader=_Loader)
        result: Any = None
        documents = 0
        nodes = 0  # nodes so far, an alias counting the nodes it names
        expanded = 0  # nodes added by aliases
        # stack entries: [container, path, pending_key, pending_key_pos, seen keys' lines, anchor or None]
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
                entry = stack.pop()
                done = entry[0]
                if entry[5] is not None:  # an anchored node is complete: aliases may name it now
                    entry[5].size = nodes - entry[5].start
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
                nodes += 1
                key = self.key(ev)
                pos = _mark(ev.start_mark)
                if key in top[4]:
                    first = top[4][key]
                    self.problem(
                        pos,
                        f"duplicate key {quote(key)} (the first one is ignored by YAML): "
                        f"the first is on line {first}",
                    )
                top[2] = key
                top[3] = pos
                continue
            if top is None:
                path: Path = ()
            elif isinstance(top[0], dict):
                path = top[1] + (top[2],)
            else:
                path = top[1] + (len(top[0]),)
            value: Any
            anchor = ev.anchor
            if isinstance(ev, yaml.AliasEvent):
                value = None
                named = self.anchors.get(anchor)
                if named is None:
                    self.problem(_mark(ev.start_mark), f"unknown alias *{_short(anchor)}")
                elif named.size is None:
                    self.problem(
                        _mark(ev.start_mark),
                        f"alias *{_short(anchor)} is inside the node it names (line {named.line});"
                        " a value cannot contain itself",
                    )
                else:
                    nodes += named.size
                    expanded += named.size
                    if expanded > ALIAS_BUDGET:
                        self.problem(
                            _mark(ev.start_mark),
                            f"YAML aliases expand to more than {ALIAS_BUDGET:,} nodes;"
                            " write the repeated parts out, or nest fewer aliases",
                        )
                        return None
                    value = named.value
                    if named.note is not None:
                        self.notes[path] = named.note
                anchor = None
            else:
                nodes += 1
                if isinstance(ev, yaml.ScalarEvent):
                    value = self.scalar(ev, path)
                elif isinstance(ev, yaml.MappingStartEvent):
                    value = {}
                    stack_entry = [value, path, _NO_KEY, None, {}, None]  # [4]: key -> its line
                else:
                    value = []
                    stack_entry = [value, path, None, None, None, None]
            if anchor:
                where = _mark(ev.start_mark)
                if anchor in self.anchors:
                    self.problem(
                        where,
                        f"anchor &{_short(anchor)} is already defined on line {self.anchors[anchor].line};"
                        " give each anchor its own name",
                    )
                named = _Anchor(value, where[0], nodes - 1)
                self.anchors[anchor] = named
                if isinstance(ev, yaml.ScalarEvent):
                    named.size = 1
                    named.note = self.notes.get(path)
                else:
                    stack_entry[5] = named
            if top is not None:
                if isinstance(top[0], dict):
                    if top[2] == "<<":
                        self.problem(top[3], "YAML merge keys (<<) are not supported; repeat the settings")
                    top[0][top[2]] = value
                    top[4].setdefault(top[2], top[3][0])
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
class _Positions:
    wanted: set[Path]  # the paths looked for, and their parents
    value_pos: dict[Path, tuple[int, int]]
    key_pos: dict[Path, tuple[int, int]]


def _find_positions(text: str, wanted: set[Path]) -> _Positions:
    """Where the nodes at `wanted` start (and their keys), in one pass over the events that
    builds no values and stops when all are found. Run only on a text that parse() accepted."""
    found = _Positions(wanted, {}, {})
    if not wanted:
        return found
    keys = _Builder("")  # reads each key as parse() did, so that the paths are the same
    stack: list[list[Any]] = []  # [is a mapping, path, pending key, its position, next index]
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    nodes = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)
    parser = _Loader(text)
    get = parser.get_event  # the event loop by hand: this pass is all loop
    try:
        while True:
            ev = get()
            kind = type(ev)
            if kind in ends:
                stack.pop()
                continue
            if kind not in nodes:
                if ev is None or kind is yaml.StreamEndEvent:
                    break
                continue
            top = stack[-1] if stack else None
            if top is None:
                path: Path = ()
            elif top[0]:
                if top[2] is _NO_KEY:
                    top[2], top[3] = keys.key(ev), _mark(ev.start_mark)
                    continue
                path = top[1] + (top[2],)
                top[2] = _NO_KEY
            else:
                path = top[1] + (top[4],)
                top[4] += 1
            if path not in wanted:
                if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                    depth = 1  # nothing wanted inside: skip to its end
                    while depth:
                        kind = type(get())
                        if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                            depth += 1
                        elif kind in ends:
                            depth -= 1
                continue
            found.value_pos[path] = _mark(ev.start_mark)
            if top is not None and top[0]:
                found.key_pos[path] = top[3]
            if len(found.value_pos) == len(wanted):
                break
            if kind is yaml.MappingStartEvent:
                stack.append([True, path, _NO_KEY, None, 0])
            elif kind is yaml.SequenceStartEvent:
                stack.append([False, path, None, None, 0])
    finally:
        parser.dispose()
    return found


@dataclass
class Document:
    """Parsed YAML plus a lazy map from value paths to source positions."""

    filename: str
    text: str
    data: Any
    _builder: _Positions | None = field(default=None, repr=False)  # the positions found so far
    notes: dict[Path, str] = field(default_factory=dict, repr=False)  # see _Resolver

    def prefetch(self, paths: Iterable[Path]) -> None:
        """Find the positions of these paths (and of their parents) in one more pass over the text.

        Only these are kept: every node's position of a 10,000 x 10 file takes 160 MB.
        """
        wanted = {p[:i] for p in map(tuple, paths) for i in range(len(p) + 1)}
        if self._builder is not None:
            if wanted <= self._builder.wanted:
                return
            wanted |= self._builder.wanted
        self._builder = _find_positions(self.text, wanted)

    def locate(self, path: Path, key: bool = False) -> tuple[int, int]:
        """Line and column of the value at `path` (or of its key), else its nearest parent."""
        self.prefetch([path])  # nothing to do when it was asked for before
        b = self._builder
        assert b is not None
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
        note = None if key else self.notes.get(tuple(path))
        if note is not None:  # a problem with a value YAML 1.1 reads otherwise: say so
            message = f"{message}; {note}"
        return Problem(self.filename, line, col, message)


# What the parser was inside when it gave up, for an opening that is never closed:
# reported at the opening (the parser notices only where the next thing fails).
_OPENINGS = {
    "while parsing a flow sequence": "[",
    "while parsing a flow mapping": "{",
    "while scanning a quoted scalar": "quote",
}


def _syntax_problem(filename: str, text: str, e: yaml.MarkedYAMLError) -> Problem:
    what = e.problem or str(e)
    opening = _OPENINGS.get(e.context or "")
    if opening and e.context_mark is not None and e.problem_mark is not None:
        start, end = _mark(e.context_mark), _mark(e.problem_mark)
        lines = text.split("\n")
        if start[0] <= len(lines) and start[1] <= len(lines[start[0] - 1]):
            char = lines[start[0] - 1][start[1] - 1]
            opening = f"{char!r}" if char in "[{" else "quote"
        else:
            opening = f"{opening!r}" if opening != "quote" else opening
        what = what.removeprefix("did not find ")
        hint = "" if opening == "quote" else " (or a comma is missing)"
        return Problem(
            filename,
            *start,
            f"YAML syntax error: the {opening} here is never closed{hint}: {what} "
            f"at line {end[0]}, column {end[1]}",
        )
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if e.context:
        what = f"{what} ({e.context})"
    return Problem(filename, line, col, f"YAML syntax error: {what}")


def parse(text: str, filename: str) -> Document:
    """Parse one YAML document; syntax errors and duplicate keys raise ConfigError."""
    b = _Builder(filename)
    try:
        data = b.run(text)
    except yaml.MarkedYAMLError as e:
        raise ConfigError([_syntax_problem(filename, text, e)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(filename, 1, 1, f"YAML error: {e}")]) from None
    if b.problems:
        raise ConfigError(b.problems)
    return Document(filename, text, data, notes=b.notes)
