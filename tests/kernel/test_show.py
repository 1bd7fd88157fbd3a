"""`ipvsmgr show` against the real kernel, without a daemon: every service ipvsadm
lists, ours named by the file, the others marked, weights and forwarding as ipvsadm says."""

from __future__ import annotations

import json

from tests.kernel.helpers import Lab, ipvsadm

CONFIG = """\
virtual_servers:
  - name: web
    address: 198.18.5.10
    port: 80
    scheduler: wrr
    reals:
      - {address: 198.18.5.21, port: 8080, weight: 3}
      - {address: 198.18.5.22, forwarding: dr, weight: 1}
"""


def test_show_names_the_kernel_table(ipvs: Lab) -> None:
    cfg = ipvs.write("lb.yaml", CONFIG)
    assert ipvs.cli("apply", config=cfg).returncode == 0
    ipvsadm("-A", "-t", "198.18.5.77:80", "-s", "rr")  # somebody else's
    r = ipvs.cli("show", "--socket", str(ipvs.work / "none.sock"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert "no daemon on" in r.stdout
    assert "web  tcp 198.18.5.10:80  wrr" in r.stdout
    assert "(not in the file: not ipvsmgr's)  tcp 198.18.5.77:80  rr" in r.stdout
    r = ipvs.cli("show", "--json", "--socket", str(ipvs.work / "none.sock"), config=cfg)
    out = json.loads(r.stdout)
    web = next(s for s in out["services"] if s["name"] == "web")
    got = {x["address"]: (x["forwarding"], x["weight"]) for x in web["reals"]}
    assert got == {"198.18.5.21:8080": ("nat", 3), "198.18.5.22:80": ("dr", 1)}
    # ipvsadm, the independent reader, agrees.
    names = {"Masq": "nat", "Route": "dr", "Tunnel": "tunnel"}
    kernel = {}
    for line in ipvsadm("-Ln", "-t", "198.18.5.10:80").splitlines():
        parts = line.split()
        if line.strip().startswith("->") and parts[1][0].isdigit():
            kernel[parts[1]] = (names[parts[2]], int(parts[3]))
    assert kernel == got
