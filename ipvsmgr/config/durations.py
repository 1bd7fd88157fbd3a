"""Durations as written in the configuration: 100ms, 2s, 1.5m, 1h or bare seconds."""

from __future__ import annotations

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: int | float | str) -> float:
    """Seconds from a schema-valid duration."""
    if isinstance(value, (int, float)):
        return float(value)
    for unit in ("ms", "s", "m", "h"):  # "ms" before "m" and "s"
        if value.endswith(unit):
            return float(value[: -len(unit)]) * _UNITS[unit]
    raise ValueError(f"not a duration: {value!r}")


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
