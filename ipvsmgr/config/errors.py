"""Configuration problems, reported as FILE:LINE:COL: message."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

Path = tuple[str | int, ...]

QUOTE_LIMIT = 80


class _ShortRepr(reprlib.Repr):
    """repr() that does a bounded amount of work, however large (or aliased, or recursive) the value."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3  # an alias bomb has 10**9 leaves: look at 8**3 of them at most
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = 8
        self.maxstring = self.maxother = self.maxlong = QUOTE_LIMIT

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= QUOTE_LIMIT:
            return repr(x)
        r = repr(x[: QUOTE_LIMIT - 5])
        return r[:-1] + "..." + r[-1]  # the head says which value it is; keep its closing quote

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # str() of an int is quadratic, and refused past 4300 digits
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_short_repr = _ShortRepr()


def quote(value: Any) -> str:
    """repr() of a value for a message, cut to QUOTE_LIMIT characters with an ellipsis."""
    text = _short_repr.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str
    severity: str = "error"  # or "warning": worth a look, but the configuration is valid

    def __str__(self) -> str:
        if self.severity == "warning":
            return f"{self.file}:{self.line}:{self.col}: warning: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


def unique(problems: Iterable[Problem]) -> list[Problem]:
    """Sorted, one line per problem however often it was found."""
    return sorted(set(problems))


class ConfigError(Exception):
    """One or more problems; nothing from this configuration may be applied.

    `warnings` are what the same file would have been warned about if valid
    (Config.warnings), so that `ipvsmgr check` can show both in one run.
    """

    def __init__(
        self, problems: list[Problem], warnings: Iterable[Problem] = (), total: int | None = None
    ) -> None:
        self.problems = unique(problems)
        self.warnings = unique(warnings)
        self.total = len(self.problems) if total is None else total  # problems may be the first few of total
        super().__init__("\n".join(str(p) for p in self.problems))


class Located(Protocol):
    """What finds positions: yamlsource.Document."""

    def prefetch(self, paths: Iterable[Path]) -> None: ...

    def locate(self, path: Path, key: bool = False) -> tuple[int, int]: ...

    def problem(self, path: Path, message: str, key: bool = False) -> Problem: ...


_LINE_OF = re.compile("\x00([0-9]+)\x00")


class Report:
    """Problems and warnings by path, given their positions at the end, in one pass over the text.

    Finding positions means reading the file again: doing it once, for every path
    at once, keeps a large file with a few problems as fast and as small as a
    valid one. A message that names another node's line takes `line_of(path)`,
    which stands in for the line number until `resolve`.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Path, str, bool, str]] = []
        self._refs: list[Path] = []

    def add(self, path: Path, message: str, key: bool = False, severity: str = "error") -> None:
        self._items.append((tuple(path), message, key, severity))

    def warn(self, path: Path, message: str) -> None:
        self.add(path, message, severity="warning")

    def line_of(self, path: Path) -> str:
        self._refs.append(tuple(path))
        return f"\x00{len(self._refs) - 1}\x00"

    def resolve(self, doc: Located) -> tuple[list[Problem], list[Problem]]:
        """The problems and the warnings, each at its line and column."""
        if not self._items:
            return [], []
        doc.prefetch([p for p, *_ in self._items] + self._refs)
        lines = [doc.locate(p)[0] for p in self._refs]
        problems: list[Problem] = []
        warnings: list[Problem] = []
        for path, message, key, severity in self._items:
            message = _LINE_OF.sub(lambda m: str(lines[int(m[1])]), message)
            p = doc.problem(path, message, key)
            if severity == "error":
                problems.append(p)
            else:
                warnings.append(replace(p, severity=severity))
        return unique(problems), unique(warnings)
