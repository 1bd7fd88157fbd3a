"""keepalived.conf read the way keepalived 2.2 reads it, into a tree of statements.

Sans-IO apart from the file reads `include` needs (injectable for tests).
What keepalived does, and so this does:

- `!` and `#` start a comment anywhere outside double quotes, so an unquoted
  `auth_pass k@l!ve1` is `k@l`;
- `{` and `}` are tokens of their own wherever they stand (`TCP_CHECK {
  connect_timeout 3 }` on one line is a block); a `{` alone on a line opens
  the block of the statement before it;
- a line ending in `\\` continues on the next one;
- `include PATTERN` (a glob, relative to the including file's directory)
  inserts the matching files in sorted order, at any depth;
- `$NAME=value` defines a parameter that `$NAME` and `${NAME}` expand to in
  the lines after it;
- `@ID line` is read only when the config id is ID, `@^ID line` only when it
  is not (the config id defaults to the host name, as keepalived's does).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_INCLUDE_DEPTH = 16  # include loops stop here with an error
MAX_FILE_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class Pos:
    file: str
    line: int
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Node:
    """One statement: its keyword, its arguments and, for a block, its children."""

    name: str
    args: list[str]
    pos: Pos
    children: list[Node] | None = None  # None: not a block
    end: Pos | None = None  # where the block's "}" stands (keepalived reports some problems there)
    used: bool = field(default=False, compare=False)  # the converter marks what it mapped

    def find(self, name: str) -> Node | None:
        """The last child called `name` (keepalived: a repeated keyword overrides)."""
        for child in reversed(self.children or []):
            if child.name == name:
                return child
        return None

    def all(self, name: str) -> list[Node]:
        return [c for c in self.children or [] if c.name == name]

    @property
    def line(self) -> str:
        return " ".join([self.name, *self.args])


class ParseError(ValueError):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(f"{pos}: {message}")
        self.pos = pos
        self.message = message


@dataclass(slots=True)
class _Line:
    tokens: list[tuple[str, int]]  # (text, column); "{" and "}" stand alone
    pos: Pos


_PARAM_DEF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_PARAM_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")

Reader = Callable[[str], str]


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def tokenize(text: str, pos: Pos) -> list[tuple[str, int]]:
    """One logical line's tokens with their columns; comments dropped, quotes removed."""
    tokens: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\f\v":
            i += 1
        elif c in "!#":
            break
        elif c in "{}":
            tokens.append((c, i + 1))
            i += 1
        elif c == '"':
            start, i, out = i, i + 1, []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise ParseError(Pos(pos.file, pos.line, start + 1), "unterminated quoted string")
            tokens.append(("".join(out), start + 1))
            i += 1
        else:
            start = i
            while i < n and text[i] not in ' \t\r\f\v!#{}"':
                i += 1
            tokens.append((text[start:i], start + 1))
    return tokens


class _Reader:
    def __init__(self, read: Reader, config_id: str) -> None:
        self.read = read
        self.config_id = config_id
        self.params: dict[str, str] = {}
        self.warnings: list[tuple[Pos, str]] = []
        self.files: list[str] = []

    def lines(self, path: str, depth: int, at: Pos | None) -> list[_Line]:
        if depth > MAX_INCLUDE_DEPTH:
            raise ParseError(at or Pos(path, 0), f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
        try:
            text = self.read(path)
        except OSError as e:
            raise ParseError(at or Pos(path, 0), f"cannot read {path}: {e.strerror or e}") from None
        self.files.append(path)
        out: list[_Line] = []
        raw = text.split("\n")
        i = 0
        while i < len(raw):
            lineno, line = i + 1, raw[i]
            i += 1
            while line.rstrip().endswith("\\") and i < len(raw):
                line = line.rstrip()[:-1] + " " + raw[i]
                i += 1
            pos = Pos(path, lineno)
            stripped = line.strip()
            if stripped.startswith("@"):
                word, _, rest = stripped[1:].partition(" ")
                negate = word.startswith("^")
                if (word.lstrip("^") == self.config_id) == negate:
                    continue
                line = rest
                stripped = rest.strip()
            m = _PARAM_DEF.match(stripped)
            if m:
                self.params[m.group(1)] = self._expand(m.group(2).strip(), pos)
                continue
            if "$" in line:
                line = self._expand(line, pos)
            tokens = tokenize(line, pos)
            if not tokens:
                continue
            if tokens[0][0] == "include":
                if len(tokens) < 2:
                    raise ParseError(pos, "include needs a file name")
                out.extend(self._include(path, tokens[1][0], depth, pos))
                continue
            out.append(_Line(tokens, pos))
        return out

    def _expand(self, text: str, pos: Pos) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name in self.params:
                return self.params[name]
            self.warnings.append((pos, f"parameter ${name} is not defined: left as it is"))
            return m.group(0)

        return _PARAM_USE.sub(sub, text)

    def _include(self, current: str, pattern: str, depth: int, pos: Pos) -> list[_Line]:
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(current) or ".", pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            self.warnings.append((pos, f"include {pattern} matches no file"))
        out: list[_Line] = []
        for match in matches:
            out.extend(self.lines(match, depth + 1, pos))
        return out


@dataclass(slots=True)
class Parsed:
    root: Node
    files: list[str]
    warnings: list[tuple[Pos, str]]


def parse(path: str, config_id: str | None = None, read: Reader = _read) -> Parsed:
    """The statement tree of `path` and every file it includes.

    Raises ParseError for what stops keepalived reading the file: an unreadable
    file, an unterminated string, unbalanced braces."""
    if config_id is None:
        config_id = os.uname().nodename
    reader = _Reader(read, config_id)
    lines = reader.lines(path, 0, None)
    root = Node("", [], Pos(path, 0), [])
    stack: list[Node] = [root]
    for line in lines:
        current: Node | None = None  # the statement this line is building
        for text, col in line.tokens:
            here = Pos(line.pos.file, line.pos.line, col)
            if text == "{":
                owner = current
                if owner is None:
                    siblings = stack[-1].children or []
                    owner = siblings[-1] if siblings and siblings[-1].children is None else None
                if owner is None:
                    raise ParseError(here, "'{' without a keyword before it")
                owner.children = []
                stack.append(owner)
                current = None
            elif text == "}":
                if len(stack) == 1:
                    raise ParseError(here, "'}' closes no block")
                stack.pop().end = here
                current = None
            elif current is None:
                current = Node(text, [], here)
                children = stack[-1].children
                assert children is not None
                children.append(current)
            else:
                current.args.append(text)
    if len(stack) > 1:
        raise ParseError(stack[-1].pos, f"the block of '{stack[-1].name}' is never closed")
    return Parsed(root, reader.files, reader.warnings)
