"""Configuration problems, reported as FILE:LINE:COL: message."""

from __future__ import annotations

from dataclasses import dataclass

Path = tuple[str | int, ...]


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
