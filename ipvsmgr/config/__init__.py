"""Configuration: YAML text -> schema validation -> typed Config (or every problem)."""

from __future__ import annotations

import dataclasses

from ipvsmgr.config.build import build
from ipvsmgr.config.errors import ConfigError, Problem
from ipvsmgr.config.model import Config
from ipvsmgr.config.schema import fast_def_check, validate
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
    problems = validate(doc)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(problems)
    servers = data.get("virtual_servers")
    if not isinstance(servers, list):
        servers = []
        data = doc.data = {**data, "virtual_servers": servers}
    skip_reals: dict[int, set[int]] = {}
    if problems:
        # Keep checking what the schema accepted: a bad real hides neither its
        # virtual server's other mistakes nor its siblings'.
        vs_ok, real_ok = fast_def_check("virtual_server"), fast_def_check("real_server")
        valid = []
        for i, s in enumerate(servers):
            if vs_ok(s):
                valid.append(True)
                continue
            reals = s.get("reals") if isinstance(s, dict) else None
            if isinstance(reals, list):
                bad = {j for j, r in enumerate(reals) if not real_ok(r)}
                if bad and vs_ok({**s, "reals": [r for j, r in enumerate(reals) if j not in bad]}):
                    skip_reals[i] = bad
                    valid.append(True)
                    continue
            valid.append(False)
        for section in ("ipvs", "vrrp", "bgp", "xdp"):  # a section the schema refused is not built
            if not fast_def_check(section)(data.get(section) or {}):
                data = {k: v for k, v in data.items() if k != section}
                doc.data = data
    else:
        valid = [True] * len(servers)
    config, semantic = build(doc, valid, skip_reals)
    problems += semantic
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, empty=True) if empty else config


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, f"cannot read the configuration: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(path, 1, 1, f"the configuration is not UTF-8 text: {e}")]) from None
    return load_text(text, path)
