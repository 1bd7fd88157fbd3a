"""The IPVS generic-netlink socket: batched requests, acks mapped to requests.

Requests are sent in chunks (one sendmsg per chunk, each message asking for
an ack); acks are matched back to their request by sequence number, so one
failing request among thousands is reported with its own label and errno.
Dumps are batched the same way; a dump that finds the socket busy (EBUSY:
one dump at a time per socket) is simply asked again.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs import wire
from ipvsmgr.ipvs.model import (
    Destination,
    DestKey,
    Service,
    ServiceKey,
    SyncDaemon,
    Table,
    Timeouts,
)

T = TypeVar("T")

# Measured in the VM: a few hundred requests per sendmsg keeps acks inside a
# forced 8 MiB receive buffer and each send far below EMSGSIZE (~600 KB).
DEFAULT_BATCH = 256
RCVBUF = 8 << 20
RECV_SIZE = 1 << 20


class IPVSUnavailable(RuntimeError):
    """The kernel has no IPVS (module missing or not loadable)."""


class NetlinkError(OSError):
    def __init__(self, err: int, what: str, detail: str = "") -> None:
        text = f"{what}: {os.strerror(err)}"
        if detail:
            text += f" ({detail})"
        super().__init__(err, text)
        self.what = what


@dataclass(frozen=True, slots=True)
class Request:
    """One IPVS request; its label is only formatted when something failed."""

    cmd: int
    attrs: bytes
    what: str = ""
    service: ServiceKey | None = None
    real: DestKey | None = None

    @property
    def label(self) -> str:
        if self.real is not None:
            return f"{self.what} real {self.real} of {self.service}"
        if self.service is not None:
            return f"{self.what} service {self.service}"
        return self.what


@dataclass(frozen=True, slots=True)
class Failure:
    index: int
    request: Request
    errno: int
    message: str

    def __str__(self) -> str:
        text = f"{self.request.label or 'request'}: {os.strerror(self.errno)}"
        return f"{text} ({self.message})" if self.message else text


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, c.NETLINK_GENERIC)
    sock.bind((0, 0))
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(270, c.NETLINK_CAP_ACK, 1)  # SOL_NETLINK: acks without the echoed request
    sock.setsockopt(270, c.NETLINK_EXT_ACK, 1)
    return sock


class IPVSClient:
    """One generic-netlink socket to IPVS in the current network namespace."""

    def __init__(self, batch: int = DEFAULT_BATCH, load_module: bool = True) -> None:
        self.batch = batch
        self.sock = _open_socket()
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)
        self.write_requests = 0  # modifying requests sent (the "writes" of a plan)
        self.sends = 0  # sendmsg calls
        self.family = self._resolve_family(load_module)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> IPVSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _send(self, data: bytes) -> None:
        self.sock.send(data)
        self.sends += 1

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self._buf)
        return bytes(self._buf[:n])

    def _resolve_family(self, load_module: bool) -> int:
        try:
            return self._lookup_family()
        except NetlinkError as e:
            if e.errno != errno.ENOENT:
                raise IPVSUnavailable(f"IPVS is not available in this kernel: {e}") from e
        import shutil  # only on this rare path: start-up time matters
        import subprocess

        if load_module and shutil.which("modprobe"):
            subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False)
            try:
                return self._lookup_family()
            except NetlinkError:
                pass
        raise IPVSUnavailable(
            "IPVS is not available in this kernel: the generic netlink family "
            "'IPVS' does not exist and `modprobe ip_vs` did not provide it; "
            "load the ip_vs module or use a kernel built with CONFIG_IP_VS"
        )

    def _lookup_family(self) -> int:
        attrs = wire.nla_str(c.CTRL_ATTR_FAMILY_NAME, c.IPVS_GENL_NAME)
        what = "generic netlink family lookup"
        msg = self._request(c.GENL_ID_CTRL, c.CTRL_CMD_GETFAMILY, attrs, what)
        if msg is None:
            raise NetlinkError(errno.ENOENT, what)
        return wire.decode_family_id(msg)

    # ------------------------------------------------------------ writes

    def execute(self, requests: Sequence[Request]) -> list[Failure]:
        """Send modifying requests in batches; return the ones the kernel refused."""
        failures: list[Failure] = []
        flags = c.NLM_F_REQUEST | c.NLM_F_ACK
        for start in range(0, len(requests), self.batch):
            chunk = requests[start : start + self.batch]
            by_seq: dict[int, int] = {}
            parts = []
            for i, req in enumerate(chunk, start):
                seq = self._next_seq()
                by_seq[seq] = i
                parts.append(wire.message(self.family, flags, seq, req.cmd, req.attrs))
            self._send(b"".join(parts))
            self.write_requests += len(chunk)
            while by_seq:
                try:
                    data = self._recv()
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        raise NetlinkError(
                            errno.ENOBUFS,
                            f"acks for {len(by_seq)} requests were lost (receive buffer overflow); "
                            "re-run to see the resulting state",
                        ) from e
                    raise
                for msg in wire.iter_messages(data):
                    if msg.type != c.NLMSG_ERROR:
                        continue
                    i = by_seq.pop(msg.seq, -1)
                    if i < 0:
                        continue
                    err, text = wire.decode_error(msg)
                    if err:
                        failures.append(Failure(i, requests[i], err, text))
        return failures

    def execute_one(self, req: Request) -> None:
        failures = self.execute([req])
        if failures:
            f = failures[0]
            raise NetlinkError(f.errno, f.request.label or "IPVS request", f.message)

    # ------------------------------------------------------------ reads

    def _dump(
        self, requests: Sequence[tuple[int, bytes]], decode: Callable[[int, wire.Message], T]
    ) -> list[list[T]]:
        """Run dump requests one after another; result i holds request i's objects.

        A socket runs one dump at a time and a dump always takes two rounds
        (its data, then NLMSG_DONE produced while we read the data), so a
        second request sent before the first one's data is read only earns
        EBUSY: batching dumps on one socket costs more than it saves.
        """
        results: list[list[T]] = [[] for _ in requests]
        flags = c.NLM_F_REQUEST | c.NLM_F_DUMP
        family = self.family
        for i, (cmd, attrs) in enumerate(requests):
            out = results[i]
            while True:
                seq = self._next_seq()
                self._send(wire.message(family, flags, seq, cmd, attrs))
                busy = False
                done = False
                while not done:
                    for msg in wire.iter_messages(self._recv()):
                        if msg.seq != seq:
                            continue
                        if msg.type == family:
                            out.append(decode(i, msg))
                        elif msg.type == c.NLMSG_DONE:
                            done = True
                        elif msg.type == c.NLMSG_ERROR:
                            err, text = wire.decode_error(msg)
                            if err == errno.EBUSY:  # someone else's dump on this socket
                                busy = done = True
                            elif err:
                                raise NetlinkError(err, "IPVS dump", text)
                            else:
                                done = True
                if not busy:
                    break
        return results

    def services(self) -> list[Service]:
        return self._dump([(c.IPVS_CMD_GET_SERVICE, b"")], lambda _i, m: wire.decode_service(m))[0]

    def dests(
        self,
        keys: Sequence[ServiceKey],
        stats: bool = True,
        reuse: Mapping[ServiceKey, Mapping[DestKey, Destination]] | None = None,
    ) -> dict[ServiceKey, dict[DestKey, Destination]]:
        """Real servers per service; without `stats` decoding skips the counters.

        With `reuse`, a decoded real equal to the one given there (same key and
        settings; connection counts are not compared) is replaced by it.
        """
        reqs = [(c.IPVS_CMD_GET_DEST, wire.service_key_attr(k)) for k in keys]
        empty: Mapping[DestKey, Destination] = {}

        def decode(i: int, m: wire.Message) -> Destination:
            d = wire.decode_dest(m, keys[i].af, stats)
            if reuse is not None:
                same = reuse.get(keys[i], empty).get(d.key)
                if same is not None and same == d:
                    return same
            return d

        lists = self._dump(reqs, decode)
        return {k: {d.key: d for d in lst} for k, lst in zip(keys, lists, strict=True)}

    def table(
        self,
        only: Iterable[ServiceKey] | None = None,
        stats: bool = True,
        reuse: Mapping[ServiceKey, Mapping[DestKey, Destination]] | None = None,
    ) -> Table:
        """Dump services, the destinations of `only` (default: all) and timeouts."""
        services = {s.key: s for s in self.services()}
        wanted = list(services) if only is None else [k for k in only if k in services]
        dests = self.dests(wanted, stats, reuse)
        return Table(services=services, dests=dests, timeouts=self.timeouts())

    def _get(self, cmd: int, attrs: bytes = b"") -> wire.Message | None:
        return self._request(self.family, cmd, attrs, f"IPVS command {cmd}")

    def _request(self, family: int, cmd: int, attrs: bytes, what: str) -> wire.Message | None:
        """One request with an ack; its reply message, if the command sends one."""
        seq = self._next_seq()
        self._send(wire.message(family, c.NLM_F_REQUEST | c.NLM_F_ACK, seq, cmd, attrs))
        reply = None
        while True:
            for msg in wire.iter_messages(self._recv()):
                if msg.seq != seq:
                    continue
                if msg.type == c.NLMSG_ERROR:
                    err, text = wire.decode_error(msg)
                    if err:
                        raise NetlinkError(err, what, text)
                    return reply
                # copy: the receive buffer is reused by the next recv
                reply = wire.Message(msg.type, msg.flags, msg.seq, memoryview(bytes(msg.payload)))

    def timeouts(self) -> Timeouts:
        msg = self._get(c.IPVS_CMD_GET_CONFIG)
        return wire.decode_timeouts(msg) if msg else Timeouts()

    def version(self) -> str:
        msg = self._get(c.IPVS_CMD_GET_INFO)
        if msg is None:
            return "unknown"
        v = wire._u32(wire.genl_attrs(msg)[c.IPVS_INFO_ATTR_VERSION])
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    def daemons(self) -> list[SyncDaemon]:
        return self._dump([(c.IPVS_CMD_GET_DAEMON, b"")], lambda _i, m: wire.decode_daemon(m))[0]

    # ------------------------------------------------------------ request builders


def new_service(svc: Service) -> Request:
    return Request(c.IPVS_CMD_NEW_SERVICE, wire.service_attr(svc), "add", svc.key)


def set_service(svc: Service) -> Request:
    return Request(c.IPVS_CMD_SET_SERVICE, wire.service_attr(svc), "edit", svc.key)


def del_service(key: ServiceKey) -> Request:
    return Request(c.IPVS_CMD_DEL_SERVICE, wire.service_key_attr(key), "delete", key)


def new_dest(key: ServiceKey, dest: Destination) -> Request:
    attrs = wire.service_key_attr(key) + wire.dest_attr(dest)
    return Request(c.IPVS_CMD_NEW_DEST, attrs, "add", key, dest.key)


def set_dest(key: ServiceKey, dest: Destination) -> Request:
    attrs = wire.service_key_attr(key) + wire.dest_attr(dest)
    return Request(c.IPVS_CMD_SET_DEST, attrs, "edit", key, dest.key)


def del_dest(key: ServiceKey, dest: DestKey) -> Request:
    attrs = wire.service_key_attr(key) + wire.dest_key_attr(dest)
    return Request(c.IPVS_CMD_DEL_DEST, attrs, "delete", key, dest)


def set_timeouts(t: Timeouts) -> Request:
    return Request(c.IPVS_CMD_SET_CONFIG, wire.timeouts_attrs(t), "set timeouts")


def new_daemon(d: SyncDaemon) -> Request:
    role = "master" if d.state == c.IP_VS_STATE_MASTER else "backup"
    return Request(c.IPVS_CMD_NEW_DAEMON, wire.daemon_attr(d), f"start sync {role} on {d.interface}")


def del_daemon(state: int) -> Request:
    role = "master" if state == c.IP_VS_STATE_MASTER else "backup"
    attr = wire.nla_nested(c.IPVS_CMD_ATTR_DAEMON, wire.nla_u32(c.IPVS_DAEMON_ATTR_STATE, state))
    return Request(c.IPVS_CMD_DEL_DAEMON, attr, f"stop sync {role}")
