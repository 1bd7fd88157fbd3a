"""`ipvsmgr run` with VRRP in the VM: a virtual server's quorum drives a VRRP instance.

The instance tracks virtual server `web` with weight 0, so losing the quorum
puts it in FAULT (VIP released) and regaining it makes it master again. The
instance sits on a dummy interface of its own (no peer: it becomes master
after its master-down interval); `ip addr` is the independent reader.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.kernel.helpers import Lab, sh
from tests.kernel.test_health import CONFIG, Server, wait_for, weights

VRRP = """\
vrrp:
  instances:
    - name: edge
      interface: vrrp0
      vrid: 51
      priority: 150
      advert_interval: 100ms
      virtual_addresses: [198.18.9.100/24]
      track:
        virtual_servers: [{name: web}]
"""


def has_vip() -> bool:
    return " 198.18.9.100/24 " in sh("ip", "-o", "addr", "show", "dev", "vrrp0")


def test_quorum_drives_vrrp(ipvs: Lab, nat_lab: None) -> None:
    sh("ip", "link", "add", "vrrp0", "type", "dummy")
    sh("ip", "addr", "add", "198.18.9.1/24", "dev", "vrrp0")
    sh("ip", "link", "set", "vrrp0", "up")
    cfg = ipvs.write("lb.yaml", CONFIG + VRRP)
    log = Path(ipvs.work / "vrrp-daemon.log")
    servers = {a: Server(a, 8080) for a in ("198.18.2.2", "198.18.2.3")}
    for s in servers.values():
        s.start()
    daemon = ipvs.daemon(cfg, log)
    try:
        a = "198.18.2.2:8080"
        wait_for(lambda: weights().get(a) == 5 and has_vip(), 90)
        assert "VRRP instance edge BACKUP -> MASTER" in log.read_text()
        servers["198.18.2.2"].stop()  # one real left < min_up 2: quorum lost
        wait_for(lambda: not has_vip(), 10)
        assert "VRRP instance edge MASTER -> FAULT: virtual server web quorum lost" in log.read_text()
        servers["198.18.2.2"].start()
        wait_for(lambda: has_vip(), 10)
        time.sleep(0.5)
        assert has_vip()

        # A reload that leaves vrrp: alone does not touch the instance ...
        Path(cfg).write_text(CONFIG.replace("scheduler: wrr", "scheduler: rr") + VRRP)
        mark = log.stat().st_size
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in log.read_text()[mark:], 60)
        time.sleep(1.0)
        assert "VRRP" not in log.read_text()[mark:] and has_vip()
        # ... a new priority is applied in place (no transition, no VIP gap) ...
        Path(cfg).write_text(CONFIG + VRRP.replace("priority: 150", "priority: 140"))
        mark = log.stat().st_size
        daemon.send_signal(signal.SIGHUP)
        done = "VRRP reloaded: added none, removed none, restarted none"
        wait_for(lambda: done in log.read_text()[mark:], 60)
        assert has_vip() and "VRRP instance edge" not in log.read_text()[mark:]
        # ... and another interval (a different router on the wire) restarts it.
        Path(cfg).write_text(CONFIG + VRRP.replace("advert_interval: 100ms", "advert_interval: 200ms"))
        mark = log.stat().st_size
        daemon.send_signal(signal.SIGHUP)
        done = "VRRP reloaded: added none, removed none, restarted edge"
        wait_for(lambda: done in log.read_text()[mark:], 60)
        wait_for(lambda: has_vip(), 10)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.stop()
        text = log.read_text()
        released = not has_vip()
        sh("ip", "link", "del", "vrrp0", check=False)
    assert code == 0, text[-3000:]
    assert released  # SIGTERM: priority 0 sent and the VIP released
    assert "VRRP instance edge MASTER -> INIT: shutdown" in text
