"""Connection sync following the VRRP role: the pure plan, and its configuration."""

from __future__ import annotations

import pytest

from ipvsmgr.config import ConfigError, load_text
from ipvsmgr.config.model import ConnectionSync
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import SyncDaemon
from ipvsmgr.syncd import plan, role_for

CS = ConnectionSync("eth1", 7, "outside")
MASTER = SyncDaemon(c.IP_VS_STATE_MASTER, "eth1", 7)
BACKUP = SyncDaemon(c.IP_VS_STATE_BACKUP, "eth1", 7)


def whats(role: str | None, running: list[SyncDaemon], cfg: ConnectionSync | None = CS) -> list[str]:
    return [r.what for r in plan(role, running, cfg)]


def test_role_follows_vrrp() -> None:
    assert [role_for(s) for s in ("master", "backup", "fault", "init")] == [
        "master",
        "backup",
        "backup",
        "backup",
    ]


def test_plan_converges_and_is_idempotent() -> None:
    assert whats("backup", []) == ["start sync backup on eth1"]
    assert whats("backup", [BACKUP]) == []
    assert whats("master", [BACKUP]) == ["stop sync backup", "start sync master on eth1"]
    assert whats("master", [MASTER]) == []
    assert whats(None, [MASTER, BACKUP]) == ["stop sync master", "stop sync backup"]
    # Another interface or sync id: restarted, the kernel cannot change a running daemon.
    other = SyncDaemon(c.IP_VS_STATE_BACKUP, "eth0", 7)
    assert whats("backup", [other]) == ["stop sync backup", "start sync backup on eth1"]
    assert whats("backup", [BACKUP], None) == ["stop sync backup"]


VRRP = """\
vrrp:
  instances:
    - {name: outside, interface: eth0, vrid: 1, virtual_addresses: [198.18.0.1]}
"""


def test_config_defaults_to_the_only_instance() -> None:
    cfg = load_text("ipvs:\n  connection_sync: {interface: eth1}\n" + VRRP, "t.yaml")
    assert cfg.connection_sync == ConnectionSync("eth1", 0, "outside")


def test_config_needs_an_instance_to_follow() -> None:
    with pytest.raises(ConfigError) as e:
        load_text("ipvs:\n  connection_sync: {interface: eth1}\n", "t.yaml")
    assert "connection_sync follows a VRRP instance: name it with `follow` (there are none)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_text("ipvs:\n  connection_sync: {interface: eth1, follow: inside}\n" + VRRP, "t.yaml")
    assert "t.yaml:2:46: no VRRP instance named 'inside' (instances: outside)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_text("ipvs:\n  connection_sync: {interface: eth1, sync_id: 256}\n" + VRRP, "t.yaml")
    assert "t.yaml:2:47: 256 is above the maximum of 255" in str(e.value)
