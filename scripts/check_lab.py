"""Check the summary `ipvsmgr lab` printed (read from stdin): CI runs the
README's main command and must fail when the lab's story does not hold."""

from __future__ import annotations

import ast
import re
import sys


def problems(text: str) -> list[str]:
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S.*?\S)\s{2,}(.*)$", text, re.M)}
    found: list[str] = []

    def counts(label: str) -> dict[str, int]:
        try:
            value = ast.literal_eval(lines[label])
        except (KeyError, ValueError, SyntaxError):
            found.append(f"no '{label}' line with request counts")
            return {}
        return value if isinstance(value, dict) else {}

    balanced = counts("balanced 1:2:3")
    if balanced and balanced != {"rs1": 10, "rs2": 20, "rs3": 30}:
        found.append(f"wrr 1:2:3 over 60 requests gave {balanced}")
    without = counts("rs2 down")
    if without and ("rs2" in without or sum(without.values()) != 30):
        found.append(f"rs2 still served or requests lost while it was down: {without}")
    after = counts("after failover")
    if after and after != {"rs1": 5, "rs2": 10, "rs3": 15}:
        found.append(f"after the failover wrr 1:2:3 over 30 requests gave {after}")
    m = re.match(r"VIP on lb2 after ([0-9.]+)s", lines.get("failover", ""))
    if m is None:
        found.append("no failover line")
    elif float(m.group(1)) > 1.0:  # 100 ms adverts: master-down is about 0.35 s
        found.append(f"failover took {m.group(1)}s")
    if not lines.get("open connection", "").startswith("kept"):
        found.append(f"the open connection was not kept: {lines.get('open connection')!r}")
    return found


if __name__ == "__main__":
    text = sys.stdin.read()
    bad = problems(text)
    for p in bad:
        print(f"lab summary: {p}", file=sys.stderr)
    print("lab summary: " + ("FAILED" if bad else "every line as expected"))
    sys.exit(1 if bad else 0)
