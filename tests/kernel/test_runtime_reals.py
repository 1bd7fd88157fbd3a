"""Reals changed at run time (`ipvsmgr real add|remove|weight`), in the VM with real IPVS
(issue 21): in the kernel within a second, health-checked, drained on removal with the
established connection kept, kept across kill -9, and the file wins over them on reload.
`ipvsadm` is the reader."""

from __future__ import annotations

import json
import re
import signal
import statistics
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ipvsmgr.control import call
from tests.kernel.helpers import Lab, connect, ipvsadm
from tests.kernel.test_daemon_control import Echo, echo_ok, serving, status
from tests.kernel.test_health import wait_for, weights

VIP, VPORT = "198.18.0.10", 8383  # a port of its own (see test_daemon_control)
METRICS = "127.0.0.1:19476"


def config(extra: str = "", weight: int = 5) -> str:
    return f"""\
ipvs:
  drain_timeout: 20s  # closed connections linger in IPVS (FIN_WAIT, TIME_WAIT) for minutes
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: wrr
    health_check: {{type: tcp, interval: 0.3s, timeout: 0.3s, rise: 1, fall: 1, jitter: 0}}
    reals:
      - {{address: 198.18.2.2, port: 8080, weight: {weight}}}
{extra}"""


def spread(xs: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def origins(lab: Lab) -> dict[str, str]:
    return {x["address"]: x["origin"] for x in status(lab)["virtual_servers"][0]["reals"]}


def test_reals_added_removed_and_weighed_at_run_time(ipvs: Lab, nat_lab: None) -> None:
    cfg = ipvs.write("lb.yaml", config())
    log = Path(ipvs.work / "daemon.log")
    servers = {a: Echo(a) for a in ("198.18.2.2", "198.18.2.3", "198.18.2.4", "198.18.2.6", "198.18.2.7")}
    daemon = ipvs.daemon(cfg, log, "--metrics", METRICS)
    try:
        wait_for(lambda: weights() == {"198.18.2.2:8080": 5}, 90)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)

        # Added through the socket: in IPVS, then serving once its first check passes.
        listed, serving_after = [], []
        for addr in ("198.18.2.3", "198.18.2.4", "198.18.2.6", "198.18.2.7"):
            t0 = time.monotonic()
            call(ipvs.socket, "real_add", {"virtual_server": "web", "real": f"{addr}:8080", "weight": "3"})
            wait_for(lambda a=addr: f"{a}:8080" in weights(), 5, 0.02)
            listed.append(time.monotonic() - t0)
            wait_for(lambda a=addr: weights().get(f"{a}:8080") == 3, 5, 0.02)
            serving_after.append(time.monotonic() - t0)
        print(json.dumps({"in_ipvs_s": spread(listed), "serving_s": spread(serving_after)}))
        assert max(listed) < 1.0, listed

        # The CLI, a real without a server: checked like the file's, so down and at weight 0.
        r = ipvs.ctl("real", "add", "web", "198.18.2.5:8080")
        assert r.returncode == 0 and "198.18.2.5:8080 of web: added (weight 1, health-checked)" in r.stdout, r
        wait_for(lambda: [x["health"] for x in status(ipvs)["virtual_servers"][0]["reals"]][-1] == "down", 10)
        assert weights()["198.18.2.5:8080"] == 0
        o = origins(ipvs)
        assert o["198.18.2.3:8080"] == "runtime" and o["198.18.2.2:8080"] == "file"
        assert "added at run time" in ipvs.ctl("status").stdout
        assert "up (runtime)" in ipvs.ctl("show", cfg).stdout
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=30) as resp:
            body = resp.read().decode()
        got = {
            (s.labels["real"], s.labels["origin"]): s.value
            for fam in text_string_to_metric_families(body) if fam.name == "ipvsmgr_real_origin"
            for s in fam.samples
        }  # fmt: skip
        assert got[("198.18.2.3:8080", "runtime")] == 1 and got[("198.18.2.2:8080", "file")] == 1, got

        # Refused with a reason, nothing changed: a real of the file, a bad address, a bad weight.
        bad = ipvs.ctl("real", "add", "web", "198.18.2.2:8080")
        assert bad.returncode == 1 and "from the configuration file" in bad.stderr, bad
        bad = ipvs.ctl("real", "remove", "web", "198.18.2.2:8080")
        assert bad.returncode == 1 and "not `real add`" in bad.stderr, bad
        bad = ipvs.ctl("real", "add", "web", "2001:db8::1")
        assert bad.returncode == 1 and "only tunnel forwarding" in bad.stderr, bad
        bad = ipvs.ctl("real", "add", "nope", "198.18.2.9")
        assert bad.returncode == 1 and "virtual servers: web" in bad.stderr, bad
        assert len(weights()) == 6

        # Weight of a file real, and of a run-time one.
        assert ipvs.ctl("real", "weight", "web", "198.18.2.2:8080", "9").returncode == 0
        assert ipvs.ctl("real", "weight", "web", "198.18.2.4:8080", "7").returncode == 0
        wait_for(lambda: weights()["198.18.2.2:8080"] == 9 and weights()["198.18.2.4:8080"] == 7, 5)

        # Removal drains: a connection held on the removed real goes on, new ones go elsewhere.
        held = []
        for _ in range(12):
            c = connect("cl", VIP, VPORT)
            assert echo_ok(c)
            held.append(c)
        before = servers["198.18.2.6"].accepted
        assert before > 0
        r = ipvs.ctl("real", "remove", "web", "198.18.2.6:8080")
        assert r.returncode == 0, r
        wait_for(lambda: weights().get("198.18.2.6:8080") == 0, 5)
        assert all(echo_ok(c) for c in held)
        for _ in range(20):
            short = connect("cl", VIP, VPORT)
            assert echo_ok(short, b"x")
            short.close()
        assert servers["198.18.2.6"].accepted == before
        assert all(echo_ok(c) for c in held)

        # kill -9 and start again: the run-time reals and weights are still there.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        daemon = ipvs.daemon(cfg, log, "--metrics", METRICS, mode="a")
        wait_for(lambda: serving(ipvs, daemon.pid), 60)
        wait_for(lambda: weights().get("198.18.2.3:8080") == 3, 30)
        w = weights()
        assert w["198.18.2.2:8080"] == 9 and w["198.18.2.4:8080"] == 7 and w["198.18.2.7:8080"] == 3, w
        assert all(echo_ok(c) for c in held)
        for c in held:
            c.close()
        wait_for(lambda: "198.18.2.6:8080" not in weights(), 60)  # drained: gone at drain_timeout

        # The file wins: it lists a run-time real, and changes the weight set at run time.
        ipvs.write("lb.yaml", config("      - {address: 198.18.2.3, port: 8080, weight: 1}\n", weight=6))
        r = ipvs.ctl("reload")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: weights()["198.18.2.3:8080"] == 1 and weights()["198.18.2.2:8080"] == 6, 10)
        text = log.read_text()
        assert re.search(r"real 198\.18\.2\.3:8080 of web is now in the configuration", text), text[-2000:]
        assert "the configuration file changed its weight from 5" in text
        o = origins(ipvs)
        assert o["198.18.2.3:8080"] == "file" and o["198.18.2.4:8080"] == "runtime"
        assert ipvs.ctl("real", "remove", "web", "198.18.2.4:8080").returncode == 0
        wait_for(lambda: weights().get("198.18.2.4:8080", 0) == 0, 5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
        print(log.read_text()[-4000:])  # shown when the test fails
    assert code == 0, log.read_text()[-3000:]


def test_a_real_that_comes_back_ramps_its_weight_over_slow_start(ipvs: Lab, nat_lab: None) -> None:
    text = (
        config()
        .replace("    reals:\n", "    slow_start: 4s\n    reals:\n")
        .replace("weight: 5}", "weight: 20}")
    )
    text += "      - {address: 198.18.2.3, port: 8080, weight: 20}\n"
    cfg = ipvs.write("slow.yaml", text)
    log = Path(ipvs.work / "daemon.log")
    steady = Echo("198.18.2.3")
    server = Echo("198.18.2.2")
    daemon = ipvs.daemon(cfg, log)
    try:
        # at start both come up together: they ramp too, the same, and reach 20
        wait_for(lambda: weights() == {"198.18.2.2:8080": 20, "198.18.2.3:8080": 20}, 90)
        server.close()
        wait_for(lambda: weights()["198.18.2.2:8080"] == 0, 10)
        server = Echo("198.18.2.2")
        seen: list[tuple[float, int]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8:
            w = weights()["198.18.2.2:8080"]
            seen.append((round(time.monotonic() - t0, 2), w))
            if w == 20 and seen[0][1] == 0:
                break
            time.sleep(0.1)
        up = next(t for t, w in seen if w > 0)  # its first passing check
        ramp = [(round(t - up, 2), w) for t, w in seen if t >= up]
        print(json.dumps({"slow_start_s": 4, "ramp": ramp}))
        weights_seen = [w for _, w in ramp]
        assert weights_seen == sorted(weights_seen), ramp  # it only climbs
        assert weights_seen[0] < 10 and weights_seen[-1] == 20, ramp
        full = next(t for t, w in ramp if w == 20)
        assert 3.0 <= full <= 6.0, ramp  # 4 s, give or take a step and the VM's pace
        assert len(set(weights_seen)) >= 4, ramp  # steps, not a jump
        assert weights()["198.18.2.3:8080"] == 20  # the other real was never touched
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        server.close()
        steady.close()
    assert code == 0, log.read_text()[-3000:]


def test_conf_d_fragments_are_merged_and_watched(ipvs: Lab, nat_lab: None) -> None:
    """conf.d/*.yaml next to the main file: merged at start, and a fragment written, broken or
    deleted is reloaded without SIGHUP; a broken one is refused at its own file, line and column."""
    cfg = ipvs.write("lb.yaml", config())
    confd = ipvs.work / "conf.d"
    confd.mkdir()
    frag = (
        "virtual_servers:\n"
        "  - {{name: {n}, address: {VIP}, port: {p}, reals: [{{address: 198.18.2.{r}, port: 8080}}]}}\n"
    )
    (confd / "api.yaml").write_text(frag.format(n="api", VIP=VIP, p=8384, r=3))
    log = Path(ipvs.work / "daemon.log")
    daemon = ipvs.daemon(cfg, log)

    def services() -> list[str]:
        return sorted(line.split()[1] for line in ipvsadm("-Ln").splitlines() if line.startswith("TCP"))

    try:
        wait_for(lambda: services() == [f"{VIP}:8383", f"{VIP}:8384"], 90)
        (confd / "dns.yaml").write_text(frag.format(n="dns", VIP=VIP, p=8385, r=4))
        took = wait_for(lambda: services() == [f"{VIP}:8383", f"{VIP}:8384", f"{VIP}:8385"], 15)
        print(json.dumps({"conf_d_new_file_to_ipvs_s": round(took, 2)}))
        (confd / "dns.yaml").write_text(frag.format(n="dns", VIP=VIP, p=99999, r=4))
        wait_for(lambda: "reload refused" in log.read_text(), 15)
        assert f"{confd}/dns.yaml:2:45: 99999 is above the maximum of 65535" in log.read_text()
        assert len(services()) == 3  # the previous configuration runs on
        (confd / "dns.yaml").unlink()
        wait_for(lambda: services() == [f"{VIP}:8383", f"{VIP}:8384"], 15)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        print(log.read_text()[-3000:])  # shown when the test fails
    assert code == 0
