"""DNS discovery in the VM with real IPVS (issue 21): a daemon whose virtual server takes its
reals from a real DNS server (dnsmasq) that the test rewrites. `ipvsadm` is the reader: a new
record is in IPVS within a second, a removed one is drained with its connection kept, NXDOMAIN,
an answer without A records and a silent server keep the last good list (stale in status and
metrics), and a source that suddenly answers with one real of six loses only half per minute."""

from __future__ import annotations

import json
import signal
import statistics
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.kernel.helpers import Lab, connect
from tests.kernel.test_daemon_control import Echo, echo_ok, status
from tests.kernel.test_health import wait_for, weights
from tests.netns.dnsmasq import ZONE, dnsmasq

VIP, VPORT = "198.18.0.10", 8484
METRICS = "127.0.0.1:19477"
REALS = [f"198.18.2.{i}" for i in range(2, 8)]
PREFIX = "/ipvsmgr/reals/web/"


def config(source: str) -> str:
    """The virtual server, its reals from `source` (the discovery's `dns:` or `etcd:` line)."""
    return f"""\
ipvs:
  drain_timeout: 300s  # a drained real stays (weight 0) for the whole test: the table compares whole
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: rr
    health_check: {{type: tcp, interval: 0.3s, timeout: 0.3s, rise: 1, fall: 1, jitter: 0, start: up}}
    discovery:
      {source}
      debounce: 0.1s
      max_removed: 0.5
    reals: []
"""


def dns_source(port: int) -> str:
    server = f'["127.0.0.1:{port}"]'
    return f"dns: {{name: web.{ZONE}., port: 8080, nameservers: {server}, timeout: 0.5s, min_ttl: 0.2s}}"


def table() -> list[str]:
    return sorted(a.split(":")[0] for a in weights())


def source(lab: Lab) -> dict:  # type: ignore[type-arg]
    return status(lab)["discovery"][0]  # type: ignore[no-any-return]


def test_reals_follow_dns_and_a_failing_source_changes_nothing(ipvs: Lab, nat_lab: None) -> None:
    servers = {a: Echo(a) for a in REALS}
    log = Path(ipvs.work / "daemon.log")
    with dnsmasq(ipvs.work, ttl=0) as dns:
        dns.set_hosts({"web": REALS[:2]})
        daemon = ipvs.daemon(ipvs.write("lb.yaml", config(dns_source(dns.port))), log, "--metrics", METRICS)
        try:
            wait_for(lambda: table() == REALS[:2], 90)
            wait_for(lambda: Path(ipvs.socket).exists(), 30)
            lags = []
            for n in (3, 4, 5, 6):  # one record more each time: in IPVS how soon after the change?
                t = time.monotonic()
                dns.set_hosts({"web": REALS[:n]})
                wait_for(lambda n=n: table() == REALS[:n], 5, 0.02)
                lags.append(time.monotonic() - t)  # from the server's change (SIGHUP)
            print(
                json.dumps(
                    {"dns_to_ipvs_s": {"p50": round(statistics.median(lags), 3), "max": round(max(lags), 3)}}
                )
            )
            assert max(lags) < 1.0, lags
            st = status(ipvs)
            origins = {r["address"]: r["origin"] for r in st["virtual_servers"][0]["reals"]}
            assert set(origins.values()) == {f"dns:web.{ZONE}."}, origins

            # Removal drains: a connection on the real that leaves DNS goes on.
            held = [connect("cl", VIP, VPORT) for _ in range(6)]
            assert all(echo_ok(c) for c in held)
            dns.set_hosts({"web": REALS[:5]})
            wait_for(lambda: weights().get(f"{REALS[5]}:8080") == 0, 5)
            assert all(echo_ok(c) for c in held)

            # Failures keep the last good list, stale in status and metrics.
            before = weights()
            failures = (({"other": ["198.18.1.1"]}, "NXDOMAIN"), ({"web": ["2001:db8::1"]}, "no A records"))
            for broken, why in failures:
                dns.set_hosts(broken)
                wait_for(lambda why=why: why in source(ipvs)["error"], 15)  # asks back off: 1, 2, 4 s
                time.sleep(1.0)
                assert weights() == before and source(ipvs)["stale"]
            dns.pause()
            wait_for(lambda: "timed out" in source(ipvs)["error"], 15)
            time.sleep(1.0)
            assert weights() == before
            text = ipvs.ctl("status").stdout
            assert "DISCOVERY" in text and "STALE" in text, text
            with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=30) as resp:
                body = resp.read().decode()
            stale = [
                smp.value for fam in text_string_to_metric_families(body) for smp in fam.samples
                if smp.name == "ipvsmgr_discovery_stale" and smp.labels["source"] == f"dns A web.{ZONE}."
            ]  # fmt: skip
            assert stale == [1.0], body
            dns.resume()

            # Six reals, then an answer with one: half of them leave, the rest is held back.
            dns.set_hosts({"web": REALS})
            wait_for(lambda: not source(ipvs)["stale"], 15)  # its next ask: failures back off up to 10 s
            wait_for(lambda: sum(1 for w in weights().values() if w) == 6, 5)
            dns.set_hosts({"web": REALS[:1]})
            wait_for(lambda: source(ipvs)["removals_held"] > 0, 5)
            time.sleep(1.0)
            serving = sorted(a for a, w in weights().items() if w)
            assert len(serving) >= 3 and f"{REALS[0]}:8080" in serving, serving
            for c in held:
                c.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
            for s in servers.values():
                s.close()
            print(log.read_text()[-4000:])  # shown when the test fails
    assert code == 0


def test_reals_follow_etcd_and_etcd_down_changes_nothing(ipvs: Lab, nat_lab: None) -> None:
    from tests.netns.etcdlab import etcd

    servers = {a: Echo(a) for a in REALS}
    log = Path(ipvs.work / "daemon.log")
    with etcd(ipvs.work) as e:
        for a in REALS[:2]:
            e.put(f"{PREFIX}{a}", {"address": a, "port": 8080})
        daemon = ipvs.daemon(
            ipvs.write(
                "lb.yaml",
                config(f'etcd: {{endpoints: ["http://{e.endpoint}"], prefix: {PREFIX}, timeout: 1s}}'),
            ),
            log,
        )
        try:
            wait_for(lambda: table() == REALS[:2], 90)
            wait_for(lambda: Path(ipvs.socket).exists(), 30)
            lags = []
            for n in (3, 4, 5):  # a real registers itself: in IPVS how soon after its put?
                t = time.monotonic()
                e.put(f"{PREFIX}{REALS[n - 1]}", {"address": REALS[n - 1], "port": 8080, "weight": 2})
                wait_for(lambda n=n: table() == REALS[:n], 5, 0.02)
                lags.append(time.monotonic() - t)
            print(
                json.dumps(
                    {
                        "etcd_put_to_ipvs_s": {
                            "p50": round(statistics.median(lags), 3),
                            "max": round(max(lags), 3),
                        }
                    }
                )
            )
            assert max(lags) < 1.0, lags
            assert weights()[f"{REALS[4]}:8080"] == 2

            # etcd killed: the table stays, the source is stale in status
            before = weights()
            e.kill()
            wait_for(lambda: source(ipvs)["stale"], 10)
            time.sleep(2.0)
            assert weights() == before
            assert "etcd 127.0.0.1" in source(ipvs)["error"]
            # started again: what is put now arrives through the resumed watch
            e.start()
            e.put(f"{PREFIX}{REALS[5]}", {"address": REALS[5], "port": 8080})
            wait_for(lambda: table() == REALS, 20)
            assert not source(ipvs)["stale"]
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
            for s in servers.values():
                s.close()
            print(log.read_text()[-4000:])  # shown when the test fails
    assert code == 0
