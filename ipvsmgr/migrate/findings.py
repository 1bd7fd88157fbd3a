"""What an import reports about each statement it read: pure values."""

from __future__ import annotations

from dataclasses import dataclass

from ipvsmgr.migrate.kaconf import Pos

# error:    the source is invalid (keepalived -t / ipvsadm would refuse it): nothing is written
# unmapped: behaviour with no ipvsmgr equivalent: the result is written but incomplete
# ignored:  a setting without effect on what ipvsmgr does (process tuning, SNMP, names)
# note:     mapped, with a difference worth knowing
KINDS = ("error", "unmapped", "ignored", "note")


@dataclass(frozen=True, slots=True)
class Finding:
    pos: Pos
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.pos}: {self.kind}: {self.message}"


def exit_status(findings: list[Finding]) -> int:
    """0 complete, 1 written but incomplete (something unmapped), 2 refused (errors)."""
    kinds = {f.kind for f in findings}
    if "error" in kinds:
        return 2
    return 1 if "unmapped" in kinds else 0
