"""libbpf.so.1 through ctypes: the few calls the guard needs, all present in libbpf 1.1.

Debian 12 ships libbpf 1.1; nothing newer is used (no bpf_prog_get_info_by_fd,
which came in 1.2: bpf_obj_get_info_by_fd does the same job).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from collections.abc import Callable

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4

BPF_ANY = 0


class LibbpfError(OSError):
    """A libbpf call failed; errno and the libbpf messages printed meanwhile are kept."""

    def __init__(self, call: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{call}: {os.strerror(err)}")
        self.call = call
        self.log = log


class _AttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _QueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class Libbpf:
    """The loaded library; messages libbpf prints (the verifier log among them) are captured."""

    def __init__(self, name: str = "libbpf.so.1") -> None:
        try:
            self.lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise LibbpfError("dlopen libbpf.so.1 (Debian package libbpf1)", errno.ENOENT, str(e)) from None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self._vsnprintf = libc.vsnprintf
        self._vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._printer = _PRINT_FN(self._print)  # kept referenced: libbpf holds the pointer
        self._declare()
        self.lib.libbpf_set_print(self._printer)

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        buf = ctypes.create_string_buffer(4096)
        self._vsnprintf(buf, len(buf), fmt, args)
        self._lines.append(buf.value.decode(errors="replace"))
        del self._lines[:-2000]  # a verifier log can be long; its tail says why
        return 0

    def _declare(self) -> None:
        L = self.lib
        vp, i, u32, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
        sigs: dict[str, tuple[list[object], object]] = {
            "libbpf_set_print": ([_PRINT_FN], vp),
            "bpf_object__open_file": ([cp, vp], vp),
            "bpf_object__load": ([vp], i),
            "bpf_object__close": ([vp], None),
            "bpf_object__find_program_by_name": ([vp, cp], vp),
            "bpf_object__find_map_by_name": ([vp, cp], vp),
            "bpf_program__set_autoload": ([vp, ctypes.c_bool], i),
            "bpf_program__fd": ([vp], i),
            "bpf_map__fd": ([vp], i),
            "bpf_map__set_pin_path": ([vp, cp], i),
            "bpf_xdp_attach": ([i, i, u32, vp], i),
            "bpf_xdp_detach": ([i, u32, vp], i),
            "bpf_xdp_query": ([i, i, vp], i),
            "bpf_prog_get_fd_by_id": ([u32], i),
            "bpf_obj_get_info_by_fd": ([i, vp, ctypes.POINTER(u32)], i),
            "bpf_obj_get": ([cp], i),
            "bpf_map_update_elem": ([i, vp, vp, ctypes.c_uint64], i),
            "bpf_map_lookup_elem": ([i, vp, vp], i),
            "bpf_map_delete_elem": ([i, vp], i),
            "bpf_map_get_next_key": ([i, vp, vp], i),
            "bpf_prog_test_run_opts": ([i, vp], i),
            "libbpf_num_possible_cpus": ([], i),
        }
        for name, (args, res) in sigs.items():
            f = getattr(L, name)
            f.argtypes = args
            f.restype = res

    def call(self, name: str, *args: object) -> int:
        """Call a function returning 0/-errno (or an fd); raise LibbpfError with the captured log."""
        with self._lock:
            self._lines.clear()
            rc = getattr(self.lib, name)(*args)
            if rc is not None and rc < 0:
                err = -rc if rc != -1 else (ctypes.get_errno() or errno.EINVAL)
                raise LibbpfError(name, err, "".join(self._lines))
            return int(rc or 0)

    def call_ptr(self, name: str, *args: object) -> int:
        with self._lock:
            self._lines.clear()
            ctypes.set_errno(0)
            ptr = getattr(self.lib, name)(*args)
            if not ptr:
                raise LibbpfError(name, ctypes.get_errno() or errno.ENOENT, "".join(self._lines))
            return int(ptr)

    def possible_cpus(self) -> int:
        return self.call("libbpf_num_possible_cpus")


_lib: Libbpf | None = None


def libbpf() -> Libbpf:
    global _lib
    if _lib is None:
        _lib = Libbpf()
    return _lib


def buf(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data, len(data))


class MapHandle:
    """A BPF map by fd: raw byte keys and values (layouts live in layout.py)."""

    def __init__(self, fd: int, key_size: int, value_size: int, percpu: bool = False) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.cpus = libbpf().possible_cpus() if percpu else 1
        # per-CPU values come back one per possible CPU, each rounded up to 8 bytes
        self.slot = (value_size + 7) & ~7 if percpu else value_size

    def get(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.slot * self.cpus)
        try:
            libbpf().call("bpf_map_lookup_elem", self.fd, buf(key), out)
        except LibbpfError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return out.raw

    def get_percpu(self, key: bytes) -> list[bytes]:
        raw = self.get(key) or b""
        return [raw[i * self.slot : i * self.slot + self.value_size] for i in range(self.cpus)]

    def put(self, key: bytes, value: bytes) -> None:
        libbpf().call("bpf_map_update_elem", self.fd, buf(key), buf(value), BPF_ANY)

    def delete(self, key: bytes) -> bool:
        try:
            libbpf().call("bpf_map_delete_elem", self.fd, buf(key))
        except LibbpfError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def key_list(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = ctypes.create_string_buffer(self.key_size)
        prev: ctypes.Array[ctypes.c_char] | None = None
        while True:
            try:
                libbpf().call("bpf_map_get_next_key", self.fd, prev, nxt)
            except LibbpfError as e:
                if e.errno == errno.ENOENT:
                    return out
                raise
            out.append(nxt.raw)
            prev = buf(nxt.raw)

    def items(self) -> dict[bytes, bytes]:
        result = {}
        for k in self.key_list():
            v = self.get(k)
            if v is not None:
                result[k] = v[: self.value_size]
        return result


def _obj_info(fd: int, request: bytes = b"", at: int = 0) -> bytes:
    """bpf_obj_get_info_by_fd into a zeroed bpf_{prog,map}_info (256 bytes covers
    every field read here), with `request` written at offset `at` first."""
    info = ctypes.create_string_buffer(256)
    ctypes.memmove(ctypes.addressof(info) + at, request, len(request))
    size = ctypes.c_uint32(len(info))
    libbpf().call("bpf_obj_get_info_by_fd", fd, info, ctypes.byref(size))
    return info.raw


def prog_info(fd: int) -> tuple[int, bytes, str]:
    """(id, tag, name) of a loaded program."""
    raw = _obj_info(fd)
    prog_id = int.from_bytes(raw[4:8], "little")
    return prog_id, raw[8:16], raw[64:80].split(b"\0", 1)[0].decode()


def prog_map_ids(fd: int) -> set[int]:
    """Ids of the maps a loaded program uses: bpf_prog_info's nr_map_ids (offset 52)
    and map_ids (56), a pointer to room for that many."""
    ids = (ctypes.c_uint32 * 64)()
    raw = _obj_info(fd, struct.pack("<IQ", len(ids), ctypes.addressof(ids)), at=52)
    count = int.from_bytes(raw[52:56], "little")
    return set(ids[: min(count, len(ids))])


def map_id(fd: int) -> int:
    return int.from_bytes(_obj_info(fd)[4:8], "little")


def xdp_query(ifindex: int) -> tuple[int, int]:
    """(native program id, generic program id) attached to an interface; 0 = none."""
    q = _QueryOpts(sz=ctypes.sizeof(_QueryOpts))
    libbpf().call("bpf_xdp_query", ifindex, 0, ctypes.byref(q))
    return q.drv_prog_id, q.skb_prog_id


def xdp_attach(ifindex: int, prog_fd: int, flags: int, old_fd: int = -1) -> None:
    opts = _AttachOpts(sz=ctypes.sizeof(_AttachOpts), old_prog_fd=old_fd if old_fd >= 0 else 0)
    libbpf().call("bpf_xdp_attach", ifindex, prog_fd, flags, ctypes.byref(opts) if old_fd >= 0 else None)


def xdp_detach(ifindex: int, flags: int) -> None:
    libbpf().call("bpf_xdp_detach", ifindex, flags, None)


def prog_fd_by_id(prog_id: int) -> int:
    return libbpf().call("bpf_prog_get_fd_by_id", prog_id)


def test_run(prog_fd: int, packet: bytes, repeat: int = 1) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: (XDP action, packet out, mean ns per run)."""
    data_in = buf(packet)
    data_out = ctypes.create_string_buffer(len(packet) + 512)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(packet),
        data_size_out=len(data_out),
        repeat=repeat,
    )
    libbpf().call("bpf_prog_test_run_opts", prog_fd, ctypes.byref(opts))
    return opts.retval, data_out.raw[: opts.data_size_out], opts.duration


Callback = Callable[[str], None]
