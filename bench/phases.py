"""Where the time of one apply goes, phase by phase, in one process (run in the VM).

python -m bench.phases CONFIG STATE_DIR
"""

from __future__ import annotations

import sys
import time

t0 = time.perf_counter()
import ipvsmgr.cli  # noqa: E402,F401  (what the command line imports first)

t_cli = time.perf_counter()
from ipvsmgr.config import load  # noqa: E402
from ipvsmgr.ipvs.client import IPVSClient  # noqa: E402
from ipvsmgr.reconcile.desired import desired_state  # noqa: E402
from ipvsmgr.reconcile.diff import diff  # noqa: E402
from ipvsmgr.reconcile.state import StateStore  # noqa: E402

t_imp = time.perf_counter()


def main() -> None:
    path, state_dir = sys.argv[1], sys.argv[2]
    marks = [("import cli", t_cli - t0), ("import rest", t_imp - t_cli)]
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        marks.append((name, now - t))
        t = now

    cfg = load(path)
    mark("load config")
    desired = desired_state(cfg)
    mark("desired state")
    client = IPVSClient()
    store = StateStore(state_dir)
    state = store.load()
    mark("open socket, state")
    services = client.services()
    mark("dump services")
    dests = client.dests([k for k in desired.services if k in {s.key for s in services}], stats=False)
    mark("dump reals")
    from ipvsmgr.ipvs.model import Table

    table = Table({s.key: s for s in services}, dests, client.timeouts())
    plan = diff(desired, table, state.owned, state.drain_started, time.time(), cfg.drain_timeout)
    mark(f"diff ({len(plan.operations)} ops)")
    reqs = [op.request() for op in plan.operations]
    mark("encode")
    failures = client.execute(reqs)
    mark(f"send ({len(failures)} failures)")
    from ipvsmgr.reconcile.state import State

    store.save(State(plan.owned, plan.drain_started))
    mark("save state")
    for name, secs in marks:
        print(f"{name:24s} {secs:7.3f} s")


if __name__ == "__main__":
    main()
