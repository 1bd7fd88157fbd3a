"""`ipvsmgr import keepalived|ipvsadm`: read, convert, check the result, write it."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipvsmgr import statefile
from ipvsmgr.migrate import yamlout
from ipvsmgr.migrate.findings import Finding, exit_status


@dataclass(slots=True)
class Outcome:
    text: str  # the YAML (empty when refused)
    findings: list[Finding]
    status: int  # findings.exit_status, or 2 when the result fails ipvsmgr's own check
    problems: list[str]  # what `ipvsmgr check` says about the result


def render(doc: dict[str, Any], findings: list[Finding], what: str) -> str:
    counts = {k: sum(1 for f in findings if f.kind == k) for k in ("unmapped", "note", "ignored")}
    header = [
        f"Imported from {what} by `ipvsmgr import` on {datetime.date.today().isoformat()}.",
        "Every setting below says where it came from. Check it with `ipvsmgr check`, "
        "compare with `ipvsmgr plan`.",
    ]
    if counts["unmapped"]:
        header.append(f"INCOMPLETE: {counts['unmapped']} setting(s) have no ipvsmgr equivalent:")
    for f in findings:
        if f.kind == "unmapped":
            header.append(f"  {f}")
    if counts["note"]:
        header.append("Mapped with a difference:")
    for f in findings:
        if f.kind == "note":
            header.append(f"  {f}")
    if counts["ignored"]:
        header.append(
            f"Ignored ({counts['ignored']}, no effect on what ipvsmgr does): "
            + ", ".join(sorted({f.message.split(":")[0] for f in findings if f.kind == "ignored"}))
        )
    return yamlout.dump(doc, header) if doc else "\n".join(f"# {h}" for h in header) + "\n"


def finish(doc: dict[str, Any], findings: list[Finding], what: str) -> Outcome:
    status = exit_status(findings)
    if status == 2:
        return Outcome("", findings, status, [])
    text = render(doc, findings, what)
    from ipvsmgr.config import ConfigError, load_text

    try:
        load_text(text, "<import>")
    except ConfigError as e:
        return Outcome(text, findings, 2, [f"{p.line}:{p.col}: {p.message}" for p in e.problems])
    return Outcome(text, findings, status, [])


def import_keepalived(path: str, config_id: str | None = None) -> Outcome:
    from ipvsmgr.migrate import kaconf, keepalived

    try:
        parsed = kaconf.parse(path, config_id)
    except kaconf.ParseError as e:
        return Outcome("", [Finding(e.pos, "error", e.message)], 2, [])
    doc, findings = keepalived.convert(parsed)
    return finish(doc, findings, path)


def import_ipvsadm(text: str, what: str) -> Outcome:
    from ipvsmgr.migrate import ipvsadm

    doc, findings = ipvsadm.convert(text, what)
    return finish(doc, findings, what)


def emit(outcome: Outcome, out: str | None, echo: Callable[[str], None], err: Callable[[str], None]) -> int:
    """Print the findings on stderr and write the YAML to `out` (or stdout); the exit status."""
    for f in outcome.findings:
        if f.kind in ("error", "unmapped"):
            err(str(f))
    if outcome.problems:
        err("the converted configuration does not pass `ipvsmgr check`:")
        for p in outcome.problems:
            err(f"  {out or '<stdout>'}:{p}")
    if outcome.status == 2 and not outcome.problems:
        err("nothing written: fix the errors above first")
        return 2
    if out:
        statefile.write_text(out, outcome.text)  # a crash leaves the old file or the new one
    else:
        sys.stdout.write(outcome.text)
    kinds = [f.kind for f in outcome.findings]
    summary = (
        f"{kinds.count('unmapped')} unmapped, {kinds.count('note')} mapped with a difference, "
        f"{kinds.count('ignored')} ignored"
    )
    if outcome.status == 0:
        err(f"complete ({summary})" + (f": wrote {out}" if out else ""))
    elif outcome.status == 1:
        err(f"INCOMPLETE ({summary})" + (f": wrote {out}" if out else ""))
    return outcome.status
