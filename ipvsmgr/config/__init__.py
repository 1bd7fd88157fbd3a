"""Configuration: YAML text -> schema validation -> typed Config (or every problem)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ipvsmgr.config.build import build
from ipvsmgr.config.errors import ConfigError, Located, Problem, Report
from ipvsmgr.config.fragments import fragment_paths, merge
from ipvsmgr.config.model import Config
from ipvsmgr.config.schema import validate
from ipvsmgr.config.yamlsource import Document, parse

DEFAULT_PATH = "/etc/ipvsmgr/ipvsmgr.yaml"

__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "Problem", "load", "load_text"]


def load_text(text: str, filename: str, fragments: Sequence[tuple[str, str]] = ()) -> Config:
    """Parse and check a configuration (with its conf.d fragments: (file, text) each);
    raise ConfigError listing every problem, each in its own file."""
    doc = parse(text, filename)
    # An empty file (or only comments) is an empty configuration, which is
    # valid, but marked: it never replaces a running one (reconcile/guard.py).
    if doc.data is None:
        doc.data = {}
    located: Located = doc
    own: list[Problem] = []
    if fragments:
        parts, bad = [], []
        for name, part_text in fragments:
            try:
                parts.append(parse(part_text, name))
            except ConfigError as e:  # every file's syntax errors at once
                bad.extend(e.problems)
        if bad:
            raise ConfigError(bad)
        located, own = merge(doc, parts)
        doc = Document(doc.filename, doc.text, located.data, notes=doc.notes)
    empty = doc.data == {}
    report = Report()
    checked = validate(doc, report)  # the schema's problems, and what the builders may trust
    config = build(filename, checked, report)
    problems, warnings = report.resolve(located)
    if problems or own:
        raise ConfigError(own + problems, warnings)
    return dataclasses.replace(config, empty=empty, warnings=tuple(warnings))


def _read(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, f"cannot read the {what}: {e.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([_not_utf8(path, raw, e)]) from None
    # read as bytes to find a bad byte's line; line ends as text mode (universal newlines) has them
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load(path: str) -> Config:
    """The file at `path` with the fragments in conf.d/ next to it (config/fragments.py)."""
    text = _read(path, "configuration")
    fragments = [(f, _read(f, "conf.d file")) for f in fragment_paths(path)]
    return load_text(text, path, fragments)


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
