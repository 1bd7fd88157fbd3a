"""A fleet of load balancers on one configuration in etcd: keys, reports and the status table.

    <prefix>config          the desired configuration: the YAML text every node runs
    <prefix>nodes/<name>    each node's report, under a lease (gone when the node is):
                            {"node", "revision", "state", "problems", "status", "at"}

A node validates every new revision of `config` before applying it; a bad
one is refused by each node with its problems (FILE:LINE:COL, the file
being `etcd:<prefix>config@<revision>`) in its report, and the node runs on
what it ran. Pure: the part (parts/fleet.py) does the talking.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

MAX_PROBLEMS = 20  # in a report: the first ones (and the count), as a refused reload logs them


@dataclass(frozen=True, slots=True)
class FleetSpec:
    endpoints: tuple[tuple[str, int], ...]
    prefix: str  # ends with "/"
    node: str
    lease_ttl: int = 10  # seconds a report outlives its node

    @property
    def config_key(self) -> str:
        return self.prefix + "config"

    @property
    def nodes_prefix(self) -> str:
        return self.prefix + "nodes/"

    @property
    def node_key(self) -> str:
        return self.nodes_prefix + self.node

    def label(self, revision: int) -> str:
        """What a problem names as its file."""
        return f"etcd:{self.config_key}@{revision}"


def report(spec: FleetSpec, applied: int, refused: int, problems: list[str], status: str) -> str:
    """A node's report: the revision it runs (0: none from etcd yet), and the newer one it
    refused with its problems, if the newest is one it refused."""
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    state = "refused" if refused else "applied" if applied else "waiting"
    return json.dumps({"node": spec.node, "applied": applied, "state": state, "refused": refused or None,
                       "problems": shown, "status": status, "at": round(time.time(), 3)})  # fmt: skip


def parse_report(key: str, value: bytes) -> dict[str, Any]:
    """A report as written by `report`; one that is not says so rather than failing the table."""
    try:
        raw = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raw = None
    if not isinstance(raw, dict):
        return {"node": key.rsplit("/", 1)[-1], "applied": 0, "state": "unreadable", "problems": [],
                "status": "", "at": 0}  # fmt: skip
    return raw


def render(config_revision: int, reports: list[dict[str, Any]], now: float) -> str:
    """`ipvsmgr fleet status`: one line per node, then the problems of those that refused."""
    lines = [
        f"configuration revision {config_revision or '- (none in etcd)'}; {len(reports)} node(s) reporting"
    ]
    rows = [["NODE", "RUNS", "STATE", "SEEN", "STATUS"]]
    for r in sorted(reports, key=lambda r: str(r.get("node"))):
        state = str(r.get("state", "?"))
        rev = int(r.get("applied", 0) or 0)
        if state == "refused":
            state = f"REFUSED {r.get('refused')}"
        elif state == "applied" and config_revision and rev < config_revision:
            state = "BEHIND"
        elif state != "applied":
            state = state.upper()
        age = now - float(r.get("at", 0) or 0)
        rows.append([str(r.get("node")), str(rev or "-"), state, f"{age:.0f}s ago", str(r.get("status", ""))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in reports:
        if r.get("problems"):
            lines.append("")
            lines.append(f"{r.get('node')} refused revision {r.get('refused')}:")
            lines += [f"  {p}" for p in r["problems"]]
    return "\n".join(lines)
