"""The XDP guard at run time: load (reusing pinned maps), attach, sync maps, read counters.

Maps are pinned under /sys/fs/bpf/ipvsmgr, and XDP attached through netlink
outlives the process, so a daemon restart finds the running program and its
counters; a restart with the same program keeps the attached one (same id),
a different one replaces it atomically (XDP_FLAGS_REPLACE).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bpf_offload import layout, libbpf
from bpf_offload.libbpf import LibbpfError, MapHandle
from bpf_offload.tables import MapChange

PIN_DIR = "/sys/fs/bpf/ipvsmgr"
PROGRAM = "xdp_guard"
OBJECT_NAME = "xdp_guard.o"
# Where the object is looked for: next to this module (built in the source
# tree by `make -C bpf_offload`), then where the Debian package installs it.
OBJECT_PATHS = (Path(__file__).with_name(OBJECT_NAME), Path("/usr/lib/ipvsmgr") / OBJECT_NAME)

# map name -> (key size, value size, per-CPU)
MAPS: dict[str, tuple[int, int, bool]] = {
    "vips": (16, layout.VIP.size, False),
    "services": (layout.SVC_KEY.size, 4, False),
    "sources": (layout.LPM_KEY.size, 4, False),
    "vip_filter": (4, layout.FILTER_BITS // 8, False),
    "vip_state": (4, layout.VIP_STATE.size, False),
    "src_buckets": (16, 16, False),
    "verified": (16, layout.VERIFIED.size, False),
    "retx": (4, layout.RETX_BLOCK_SIZE, False),
    "config": (4, layout.CONFIG.size, False),
    "stats": (4, layout.STAT.size, True),
    "samples": (4, layout.SAMPLE.size, False),
    "sample_seq": (4, 8, False),
}
SYNCED = ("vips", "services", "sources", "vip_filter", "config")
_STALE_PIN = re.compile(r"couldn't reuse pinned map at '([^']+)'")


class GuardError(Exception):
    """The guard could not be loaded or attached; `log` holds libbpf's and the verifier's words."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log

    def log_tail(self, lines: int = 12) -> str:
        """The verifier's last words when it refused the program, else libbpf's last lines."""
        text = self.log
        begin, end = text.rfind("-- BEGIN PROG LOAD LOG --"), text.rfind("-- END PROG LOAD LOG --")
        if 0 <= begin < end:
            text = text[begin + len("-- BEGIN PROG LOAD LOG --") : end]
        kept = [line for line in text.strip().splitlines() if line.strip() and not line.startswith(";")]
        return "\n".join(kept[-lines:])


def find_object(configured: str | None = None) -> Path:
    candidates = [Path(configured)] if configured else [
        *(Path(p) for p in [os.environ.get("IPVSMGR_XDP_OBJECT", "")] if p), *OBJECT_PATHS,
    ]  # fmt: skip
    for c in candidates:
        if c.is_file():
            return c
    where = ", ".join(str(c) for c in candidates)
    raise GuardError(
        f"no XDP object at {where}: build it with `make -C bpf_offload` (needs clang, libbpf-dev)"
    )


def ensure_bpffs(pin_dir: str) -> None:
    root = "/sys/fs/bpf"
    if pin_dir.startswith(root + "/") and not os.path.ismount(root):
        # systemd mounts it at boot; a bare test machine or container may not have
        rc = os.system(f"mount -t bpf bpf {root} >/dev/null 2>&1")
        if rc != 0 and not os.path.ismount(root):
            raise GuardError(f"{root} is not a BPF filesystem and mounting one failed")
    os.makedirs(pin_dir, mode=0o700, exist_ok=True)


@dataclass(frozen=True, slots=True)
class Attachment:
    interface: str
    ifindex: int
    mode: str  # native | generic
    prog_id: int
    adopted: bool  # the program found attached was kept (same instructions)


class LoadedGuard:
    """The program loaded into the kernel with its maps (pinned, shared with a running copy)."""

    def __init__(self, object_path: Path, pin_dir: str = PIN_DIR, program: str = PROGRAM) -> None:
        ensure_bpffs(pin_dir)
        self.pin_dir = pin_dir
        self.obj = 0
        self.replaced_maps: list[str] = []
        for _ in range(len(MAPS) + 1):
            try:
                self._load(object_path, program)
                return
            except LibbpfError as e:
                self.close()
                stale = _STALE_PIN.search(e.log)
                if e.call == "bpf_object__load" and stale and os.path.dirname(stale.group(1)) == pin_dir:
                    # An upgrade changed this map's definition: start it afresh. The
                    # running program keeps the old one until it is replaced.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale.group(1))
                    self.replaced_maps.append(os.path.basename(stale.group(1)))
                    continue
                raise GuardError(f"loading {object_path} failed: {e.strerror} ({e.call})", e.log) from None
            except GuardError:
                self.close()
                raise
        raise GuardError(f"loading {object_path} failed: pinned maps in {pin_dir} keep being refused")

    def _load(self, object_path: Path, program: str) -> None:
        lib = libbpf.libbpf()
        try:
            self.obj = lib.call_ptr("bpf_object__open_file", str(object_path).encode(), None)
        except LibbpfError as e:
            raise GuardError(f"opening {object_path} failed: {e.strerror}", e.log) from None
        for name in ("xdp_guard", "xdp_pass"):
            p = self._find("bpf_object__find_program_by_name", name, object_path)
            lib.call("bpf_program__set_autoload", p, name == program)
        found: dict[str, int] = {}
        for name in MAPS:
            m = self._find("bpf_object__find_map_by_name", name, object_path)
            lib.call("bpf_map__set_pin_path", m, f"{self.pin_dir}/{name}".encode())
            found[name] = m
        lib.call("bpf_object__load", self.obj)
        prog = lib.call_ptr("bpf_object__find_program_by_name", self.obj, program.encode())
        self.prog_fd = lib.call("bpf_program__fd", prog)
        self.prog_id, self.tag, _ = libbpf.prog_info(self.prog_fd)
        self.maps = {name: MapHandle(lib.call("bpf_map__fd", m), *MAPS[name]) for name, m in found.items()}

    def _find(self, call: str, name: str, object_path: Path) -> int:
        try:
            return libbpf.libbpf().call_ptr(call, self.obj, name.encode())
        except LibbpfError:
            what = "program" if "program" in call else "map"
            raise GuardError(
                f"{object_path} has no {what} {name!r}: not the guard this ipvsmgr was built with"
            ) from None

    def close(self) -> None:
        """Drop our references; an attached program and the pinned maps stay in the kernel."""
        if self.obj:
            libbpf.libbpf().lib.bpf_object__close(self.obj)
            self.obj = 0

    # -- attachment -------------------------------------------------------

    def attach(self, interface: str, mode: str) -> Attachment:
        """Attach (or keep, or atomically replace ours) on one interface.

        mode: native, generic, or auto (native, falling back to generic when
        the driver has no XDP support).  A program that is not ours is never
        replaced.
        """
        try:
            ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise GuardError(f"no interface {interface!r}") from None
        drv, skb = libbpf.xdp_query(ifindex)
        modes = ["native", "generic"] if mode == "auto" else [mode]
        existing = {"native": drv, "generic": skb}
        # Keep whatever of ours is attached in an acceptable mode.
        for m in modes:
            if existing[m]:
                return self._keep_or_replace(interface, ifindex, m, existing[m])
        for m, other in existing.items():
            if other and m not in modes:
                self._check_ours(interface, other)
                libbpf.xdp_detach(ifindex, _flag(m))  # a mode change cannot be atomic
        errors = []
        for m in modes:
            try:
                libbpf.xdp_attach(ifindex, self.prog_fd, _flag(m) | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
            except LibbpfError as e:
                errors.append(f"{m}: {e.strerror}")
                continue
            return Attachment(interface, ifindex, m, self.prog_id, False)
        raise GuardError(f"attaching XDP to {interface} failed ({'; '.join(errors)})")

    def _check_ours(self, interface: str, prog_id: int) -> tuple[int, bytes]:
        try:
            fd = libbpf.prog_fd_by_id(prog_id)
        except LibbpfError as e:
            raise GuardError(f"cannot inspect XDP program {prog_id} on {interface}: {e.strerror}") from None
        _, tag, name = libbpf.prog_info(fd)
        if name != PROGRAM:
            os.close(fd)
            raise GuardError(
                f"{interface} already runs another XDP program ({name or 'unnamed'}, id {prog_id}); "
                "ipvsmgr does not replace programs it did not attach"
            )
        return fd, tag

    def _keep_or_replace(self, interface: str, ifindex: int, mode: str, prog_id: int) -> Attachment:
        fd, tag = self._check_ours(interface, prog_id)
        try:
            if tag == self.tag and not self.replaced_maps and self._uses_our_maps(fd):
                return Attachment(interface, ifindex, mode, prog_id, True)
            libbpf.xdp_attach(ifindex, self.prog_fd, _flag(mode) | libbpf.XDP_FLAGS_REPLACE, old_fd=fd)
            return Attachment(interface, ifindex, mode, self.prog_id, False)
        except LibbpfError as e:
            raise GuardError(f"replacing the XDP program on {interface} failed: {e.strerror}") from None
        finally:
            os.close(fd)

    def _uses_our_maps(self, attached_fd: int) -> bool:
        """The tag hashes instructions with map references blanked, so the same
        build reads the same tag even when it runs on other maps: pins deleted
        or a bpffs that did not outlive the last daemon (one mounted in a
        service's private mount namespace). Adopting it then would leave every
        table update and counter read on maps the running program never sees."""
        pinned = {libbpf.map_id(h.fd) for h in self.maps.values()}
        ours = libbpf.prog_map_ids(self.prog_fd) & pinned
        return bool(ours) and ours <= libbpf.prog_map_ids(attached_fd)

    # -- maps -------------------------------------------------------------

    def read_synced(self) -> dict[str, dict[bytes, bytes]]:
        return {name: self.maps[name].items() for name in SYNCED}

    def apply(self, changes: Iterable[MapChange]) -> int:
        n = 0
        for c in changes:
            m = self.maps[c.map]
            if c.value is None:
                m.delete(c.key)
            else:
                m.put(c.key, c.value)
            n += 1
        return n


def detach(interface: str) -> bool:
    """Remove our program from an interface (both modes); False when none of ours was there."""
    try:
        ifindex = socket.if_nametoindex(interface)
    except OSError:
        return False
    drv, skb = libbpf.xdp_query(ifindex)
    done = False
    for mode, prog_id in (("native", drv), ("generic", skb)):
        if not prog_id:
            continue
        try:
            fd = libbpf.prog_fd_by_id(prog_id)
        except LibbpfError:
            continue
        try:
            if libbpf.prog_info(fd)[2] != PROGRAM:
                continue
            libbpf.xdp_detach(ifindex, _flag(mode))
            done = True
        finally:
            os.close(fd)
    return done


def unpin(pin_dir: str = PIN_DIR) -> None:
    for name in MAPS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{pin_dir}/{name}")
    try:
        os.rmdir(pin_dir)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


def _flag(mode: str) -> int:
    return libbpf.XDP_FLAGS_DRV_MODE if mode == "native" else libbpf.XDP_FLAGS_SKB_MODE


@dataclass(frozen=True, slots=True)
class VipAttack:
    address: str
    under_attack: bool
    syn_rate: int  # SYNs in the last whole second
    attacks: int  # times attack mode was entered


def read_stats(maps: Mapping[str, MapHandle]) -> dict[str, tuple[int, int]]:
    """reason -> (packets, bytes), summed over CPUs."""
    out = {}
    m = maps["stats"]
    for i, (name, _) in enumerate(layout.REASONS):
        p = b = 0
        for raw in m.get_percpu(layout.U32.pack(i)):
            dp, db = layout.STAT.unpack(raw)
            p += dp
            b += db
        out[name] = (p, b)
    return out


def read_attack(maps: Mapping[str, MapHandle], now_ns: int) -> list[VipAttack]:
    out = []
    for key, value in maps["vips"].items().items():
        index = layout.VIP.unpack(value)[0]
        raw = maps["vip_state"].get(layout.U32.pack(index))
        if raw is None:
            continue
        start, syns, last, until, attacks = layout.VIP_STATE.unpack(raw[: layout.VIP_STATE.size])
        rate = last if now_ns - start < 2_000_000_000 else 0
        out.append(VipAttack(layout.addr_text(key), now_ns < until, rate, attacks))
    return sorted(out, key=lambda a: a.address)


def read_samples(maps: Mapping[str, MapHandle]) -> list[layout.DropSample]:
    seq_raw = maps["sample_seq"].get(layout.U32.pack(0))
    total = layout.U64.unpack(seq_raw[:8])[0] if seq_raw else 0
    count = min(total, layout.SAMPLES)
    out = []
    for n in range(total - count, total):
        raw = maps["samples"].get(layout.U32.pack(n % layout.SAMPLES))
        if raw:
            out.append(layout.DropSample.unpack(raw))
    return out
