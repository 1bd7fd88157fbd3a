"""Time to mark a real down after it goes silent, against the bound fall x interval + timeout.

Two namespaces (tests/netns/lab.py): a TCP server on 198.18.200.2:80, and
the daemon's scheduler with a real tcp check in the client namespace
(interval 1 s, rise 1, fall 3, the default jitter 0.1). Each trial waits for
the real to be up, then at a random moment makes the server silent (an
nftables rule in its namespace drops the SYNs, as a dead host or a
blackholed rack does) and measures until the check reports it down; the
rule is removed and the next trial waits for the real to come back. Done
for timeouts of 0.5, 0.95 and 1.0 x the interval.

    .venv/bin/python -m bench.health_downtime [--trials 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import time
from typing import Any

INTERVAL, FALL, JITTER = 1.0, 3, 0.1
DROP = (
    "table inet silence {\n chain input {\n  type filter hook input priority 0\n  tcp dport 80 drop\n }\n}\n"
)


def trials(lab: Any, timeout: float, count: int, seed: int) -> list[float]:
    from healthchecks.checkers.tcp import TcpCheck
    from healthchecks.result import Target
    from healthchecks.scheduler import ScheduledCheck, Scheduler
    from tests.netns.lab import SERVER4

    def nft(args: list[str], text: str = "") -> None:
        subprocess.run(["ip", "netns", "exec", lab.server, "nft", *args], input=text, text=True, check=True)

    async def body() -> list[float]:
        rng = random.Random(seed)
        s = Scheduler()
        changed: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
        s.subscribe(lambda key, t, r: changed.put_nowait((t.up, time.monotonic())))
        check = ScheduledCheck("real", TcpCheck(), Target(SERVER4, 80), interval=INTERVAL, timeout=timeout,
                               rise=1, fall=FALL, jitter=JITTER)  # fmt: skip
        s.update([check])
        out = []
        try:
            for _ in range(count):
                up, _ = await changed.get()
                assert up
                await asyncio.sleep(1.0 + rng.random() * INTERVAL)  # a random phase
                await asyncio.to_thread(nft, ["-f", "-"], DROP)
                silent = time.monotonic()
                up, at = await changed.get()
                assert not up
                out.append(at - silent)
                await asyncio.to_thread(nft, ["delete", "table", "inet", "silence"])
        finally:
            await s.close()
        return out

    result: list[float] = lab.run(body)
    return result


def run(count: int) -> dict[str, Any]:
    from tests.netns.lab import SERVER4, make_lab

    lab = make_lab()
    try:
        lsock = lab.closing_listener(SERVER4, 80, 64)
        out: dict[str, Any] = {
            "interval_s": INTERVAL,
            "fall": FALL,
            "jitter": JITTER,
            "trials": count,
            "runs": [],
        }
        for i, ratio in enumerate((0.5, 0.95, 1.0)):
            timeout = ratio * INTERVAL
            took = trials(lab, timeout, count, seed=i)
            bound = FALL * INTERVAL + timeout
            out["runs"].append({
                "timeout_s": timeout, "bound_s": bound, "min_s": round(min(took), 3),
                "p50_s": round(statistics.median(took), 3), "max_s": round(max(took), 3),
                "max_over_bound": round(max(took) / bound, 3),
            })  # fmt: skip
        lsock.close()
        return out
    finally:
        lab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    a = ap.parse_args()
    r = run(a.trials)
    print(f"interval {r['interval_s']} s, fall {r['fall']}, jitter {r['jitter']}, {r['trials']} trials each")
    for x in r["runs"]:
        print(
            f"timeout {x['timeout_s']:.2f} s: down after {x['min_s']}-{x['max_s']} s (p50 {x['p50_s']} s); "
            f"bound {x['bound_s']:.2f} s; max/bound {x['max_over_bound']}"
        )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
