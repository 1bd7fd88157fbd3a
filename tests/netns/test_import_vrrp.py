"""The VRRP half of `ipvsmgr import keepalived`, on the wire: keepalived 2.2.7 runs a
keepalived.conf on node a, then ipvsmgr runs its import on the same node; the adverts
(captured on the LAN) are the same bytes and the same VIPs are on eth0."""

from __future__ import annotations

import time

import pytest

from ipvsmgr.migrate import command
from tests.netns.vrrplab import ADDR4, VIP4, VrrpLab, keepalived

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")

SECOND_VIP = "198.18.10.101"
CONF = f"""\
global_defs {{
    router_id lb1
}}
vrrp_script up {{
    script "/bin/true"
    interval 1
    weight 20
}}
vrrp_instance VI_1 {{
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 130
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass k@l!ve1
    }}
    virtual_ipaddress {{
        {VIP4}/24 dev eth0 label eth0:vip
        {SECOND_VIP}/24
    }}
    track_script {{
        up
    }}
}}
"""


def test_keepalived_and_its_import_send_the_same_adverts_and_hold_the_same_vips(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    lab.sniff()
    conf = lab.work / "keepalived.conf"
    conf.write_text("global_defs {\n    enable_script_security\n    script_user root\n}\n" + CONF)
    outcome = command.import_keepalived(str(conf), "lb1")
    assert outcome.status == 0, [str(f) for f in outcome.findings] + outcome.problems

    def run(start: float, proc_name: str, text: str, kind: str) -> tuple[bytes, bool, bool]:
        proc = lab.keepalived("a", text, proc_name) if kind == "k" else lab.ipvsmgr("a", text, proc_name)
        try:
            lab.wait_for(
                lambda: any(c.src == ADDR4["a"] and c.at >= start and c.vrrp[2] == 150 for c in lab.captured),
                15,
                f"an advert at priority 150 (130 + the script's 20) from {proc_name}",
            )
            lab.wait_for(lambda: lab.has_address("a", SECOND_VIP), 5, "the VIPs")
            first = next(
                c.vrrp for c in lab.captured if c.src == ADDR4["a"] and c.at >= start and c.vrrp[2] == 150
            )
            return first, lab.has_address("a", VIP4), lab.has_address("a", SECOND_VIP)
        finally:
            lab.stop(proc)

    ka = run(time.monotonic(), "ka", conf.read_text(), "k")
    lab.wait_for(lambda: not lab.has_address("a", VIP4), 5, "keepalived's VIPs gone")
    im = run(time.monotonic(), "im", outcome.text, "i")
    assert im == ka, (im[0].hex(" "), ka[0].hex(" "))
    assert ka[0][4] == 1 and ka[0][-8:] == b"k@l\0\0\0\0\0"  # PASS, the password cut at the "!"
