"""IPVS connection sync that follows the VRRP role.

The node holding the VIPs runs the kernel's sync master (it multicasts its
connection table), the other runs the sync backup (it learns those
connections), so that after a failover the new master already knows the
established connections and forwards them to the same reals. `plan()` is
pure: from the wanted role and the daemons the kernel runs, the requests
that make them match.
"""

from __future__ import annotations

from collections.abc import Sequence

from ipvsmgr.config.model import ConnectionSync
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.client import Request, del_daemon, new_daemon
from ipvsmgr.ipvs.model import SyncDaemon

ROLES = {"master": c.IP_VS_STATE_MASTER, "backup": c.IP_VS_STATE_BACKUP}


def role_for(vrrp_state: str) -> str:
    """VRRP master sends; every other state (backup, fault, init) receives."""
    return "master" if vrrp_state == "master" else "backup"


def plan(role: str | None, running: Sequence[SyncDaemon], cfg: ConnectionSync | None) -> list[Request]:
    """Requests that leave exactly the daemon of `role` running, as configured
    (role None or cfg None: none at all). A daemon on another interface or
    sync id is restarted: the kernel cannot edit one in place."""
    want: SyncDaemon | None = None
    if role is not None and cfg is not None:
        want = SyncDaemon(ROLES[role], cfg.interface, cfg.sync_id)
    out: list[Request] = []
    for d in running:
        if d != want:
            out.append(del_daemon(d.state))
    if want is not None and want not in running:
        out.append(new_daemon(want))
    return out
