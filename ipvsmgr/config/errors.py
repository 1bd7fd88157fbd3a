"""Configuration problems, reported as FILE:LINE:COL: message."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

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

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(Exception):
    """One or more problems; nothing from this configuration may be applied."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))  # one line per problem, however often it was found
        super().__init__("\n".join(str(p) for p in self.problems))
