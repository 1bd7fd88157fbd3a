"""Configuration: YAML text -> schema validation -> typed Config (or every problem)."""

from __future__ import annotations

import dataclasses

from ipvsmgr.config.build import build
from ipvsmgr.config.errors import ConfigError, Problem, Report
from ipvsmgr.config.model import Config
from ipvsmgr.config.schema import validate
from ipvsmgr.config.yamlsource import parse

DEFAULT_PATH = "/etc/ipvsmgr/ipvsmgr.yaml"

__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "Problem", "load", "load_text"]


def load_text(text: str, filename: str) -> Config:
    """Parse and check a configuration; raise ConfigError listing every problem."""
    doc = parse(text, filename)
    # An empty file (or only comments) is an empty configuration, which is
    # valid, but marked: it never replaces a running one (reconcile/guard.py).
    empty = doc.data is None or doc.data == {}
    if doc.data is None:
        doc.data = {}
    report = Report()
    checked = validate(doc, report)  # the schema's problems, and what the builders may trust
    config = build(filename, checked, report)
    problems, warnings = report.resolve(doc)
    if problems:
        raise ConfigError(problems, warnings)
    return dataclasses.replace(config, empty=empty, warnings=tuple(warnings))


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, f"cannot read the configuration: {e.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([_not_utf8(path, raw, e)]) from None
    # read as bytes to find a bad byte's line; line ends as text mode (universal newlines) has them
    return load_text(text.replace("\r\n", "\n").replace("\r", "\n"), path)


def _not_utf8(path: str, raw: bytes, e: UnicodeDecodeError) -> Problem:
    """Where the first byte that is not UTF-8 is, as a line and a column of characters."""
    line_start = raw.rfind(b"\n", 0, e.start) + 1
    line = raw.count(b"\n", 0, e.start) + 1
    col = len(raw[line_start : e.start].decode("utf-8", errors="replace")) + 1
    byte = raw[e.start : e.start + 1].hex()
    return Problem(
        path,
        line,
        col,
        f"byte 0x{byte} is not UTF-8 ({e.reason}): save the file as UTF-8",
    )
