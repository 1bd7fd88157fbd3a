"""When the guard cannot run (verifier refusal, no object, an interface that
fails), the daemon's XDP side says so with the verifier's words and leaves
nothing half attached."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsmgr.config import load_text
from ipvsmgr.xdpshield import XdpShield, tables_for
from tests.netns.lab import SERVER4, Lab, have_root, sh
from tests.netns.xdpkit import build_object

pytestmark = pytest.mark.skipif(not have_root(), reason="XDP needs root")

ROOT = Path(__file__).resolve().parents[2]
# The guard with its first bounds check taken out: every verifier refuses it.
CHECK = """	if ((void *)(eth + 1) > data_end)
		return verdict(ctx, NULL, NULL, R_PASS_NOT_IP, XDP_PASS);
	proto = eth->h_proto;"""


@pytest.fixture(autouse=True)
def no_pins_left(tmp_path: Path) -> Iterator[None]:
    yield
    pin = Path(pin_dir(tmp_path))
    if pin.exists():
        for p in pin.iterdir():
            p.unlink()
        pin.rmdir()


def pin_dir(tmp_path: Path) -> str:
    return f"/sys/fs/bpf/ipvsmgr-test-{tmp_path.name[-20:]}"


def config(tmp_path: Path, interfaces: str, obj: str | None = None) -> object:
    pin = pin_dir(tmp_path)
    text = (
        f"virtual_servers:\n  - {{address: {SERVER4}, port: 80, reals: [{{address: 198.18.7.1}}]}}\n"
        f"xdp:\n  interfaces: {interfaces}\n  mode: generic\n  pin_path: {pin}\n"
        + (f"  object: {obj}\n" if obj else "")
    )
    return load_text(text, "lb.yaml")


def xdp_attached(ns: str) -> bool:
    return "xdp" in json.loads(sh("ip", "-j", "-n", ns, "link", "show", "veth0"))[0]


def test_a_verifier_refusal_degrades_with_the_log(lab: Lab, tmp_path: Path) -> None:
    source = (ROOT / "bpf_offload" / "xdp_guard.c").read_text()
    assert source.count(CHECK) == 1
    src = tmp_path / "xdp_guard.c"
    src.write_text(source.replace(CHECK, "\tproto = eth->h_proto;"))
    (tmp_path / "guard.h").write_text((ROOT / "bpf_offload" / "guard.h").read_text())
    obj = tmp_path / "bad.o"
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    cflags = ["-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-I/usr/include/{multiarch}"]
    subprocess.run(["clang", *cflags, "-c", str(src),
                    "-o", str(obj)], check=True)  # fmt: skip
    cfg = config(tmp_path, "[veth0]", str(obj))
    shield = XdpShield()
    lab.in_server(lambda: shield.start(cfg, tables_for(cfg, frozenset(), {})))  # type: ignore[arg-type]
    st = shield.status()
    assert st["state"] == "degraded" and "loading" in st["error"] and "Permission denied" in st["error"]
    assert "invalid access to packet" in st["verifier_log_tail"], st
    assert not xdp_attached(lab.server)
    assert shield.counters["load_failures"] == 1

    missing = config(tmp_path, "[veth0]", str(tmp_path / "nope.o"))
    shield = XdpShield()
    shield.start(missing, tables_for(missing, frozenset(), {}))  # type: ignore[arg-type]
    assert shield.status()["state"] == "degraded" and "no XDP object" in shield.status()["error"]


def test_one_failing_interface_leaves_none_attached(lab: Lab, tmp_path: Path) -> None:
    build_object()
    cfg = config(tmp_path, "[veth0, nosuch0]")
    shield = XdpShield()
    lab.in_server(lambda: shield.start(cfg, tables_for(cfg, frozenset(), {})))  # type: ignore[arg-type]
    st = shield.status()
    assert st["state"] == "degraded" and "nosuch0" in st["error"]
    assert not xdp_attached(lab.server)  # veth0 was attached first, then rolled back
    # the same configuration without the bad interface comes up
    good = config(tmp_path, "[veth0]")
    lab.in_server(lambda: shield.start(good, tables_for(good, frozenset(), {})))  # type: ignore[arg-type]
    assert shield.status()["state"] == "active" and xdp_attached(lab.server)
    lab.in_server(shield.remove)
    assert not xdp_attached(lab.server)
    assert not Path(good.xdp.pin_path).exists()  # type: ignore[attr-defined]


def test_an_incompatible_pinned_map_is_started_afresh(tmp_path: Path) -> None:
    """After an upgrade that changed a map's definition, the load goes on with a new map."""
    from bpf_offload import guard

    pin = pin_dir(tmp_path)
    Path(pin).mkdir()
    sh("bpftool", "map", "create", f"{pin}/vips", "type", "hash", "key", "16", "value", "4", "entries", "16",
       "name", "vips")  # fmt: skip
    g = guard.LoadedGuard(build_object(), pin)
    try:
        assert g.replaced_maps == ["vips"]
        shown = json.loads(sh("bpftool", "-j", "map", "show", "pinned", f"{pin}/vips"))
        assert (shown["bytes_value"], shown["max_entries"]) == (8, 4096)
    finally:
        g.close()
