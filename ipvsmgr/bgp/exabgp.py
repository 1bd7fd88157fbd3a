"""ExaBGP as ipvsmgr's BGP speaker: its configuration, environment and API messages (sans-IO).

ExaBGP 4.2 (Debian) and 5.x (PyPI) read the same configuration and speak the
same process API: ExaBGP starts the `run` program of a `process` block, reads
commands from its stdout and writes JSON messages (neighbour state) and
command acknowledgements (`done`/`error`) to its stdin. ipvsmgr's program is
a two-line shell script that joins those pipes to two FIFOs the daemon owns:

    commands: daemon -> cmd FIFO -> cat -> ExaBGP
    messages: ExaBGP -> cat -> evt FIFO -> daemon

Both FIFOs are opened read-write by the script, so neither end ever sees
EOF or SIGPIPE because the other side is momentarily absent.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from ipvsmgr.config.model import BgpConfig

PROCESS = "ipvsmgr"

# ExaBGP's settings, as environment variables (dots spelt as underscores).
ENVIRONMENT = {
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_user": "root",  # else it drops to `nobody` and cannot run the API script
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_pid": "",
    "exabgp_log_destination": "stdout",
    "exabgp_api_ack": "true",
    "exabgp_api_cli": "false",  # no named pipes in /run/exabgp: the API process is the interface
    # A dead API script is started again by ExaBGP (its routes stay: they belong
    # to the sessions) and reopens the same FIFOs. ExaBGP 4.2 would otherwise
    # run on with its routes and nobody to withdraw them.
    "exabgp_api_respawn": "true",
    "exabgp_api_encoder": "json",
    "exabgp_tcp_bind": "",  # never listen: ipvsmgr's nodes connect out
}


def api_script(cmd_fifo: str, evt_fifo: str, pid_file: str) -> str:
    # The script's pid (kept by `exec`) is its process group (ExaBGP setpgrp()s
    # it): the daemon kills that group if ExaBGP dies without reaping it.
    return (
        "#!/bin/sh\n"
        "# Written by ipvsmgr: joins ExaBGP's API pipes to the daemon's FIFOs.\n"
        f"echo $$ > {shlex.quote(pid_file)}\n"
        "exec 3<&0\n"
        f"cat <&3 1<>{shlex.quote(evt_fifo)} &\n"
        f"exec cat 0<>{shlex.quote(cmd_fifo)} 3<&-\n"
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def configuration(config: BgpConfig, script: str) -> str:
    """ExaBGP's configuration: one neighbour per peer, no static routes
    (everything is announced through the API, so ExaBGP holds no route
    the daemon did not decide)."""
    families = {p.family for p in config.peers} | {a.family for a in config.announcements}
    lines = [
        "# Written by ipvsmgr from the bgp: section of its configuration; do not edit.",
        f"process {PROCESS} {{",
        f"    run {script};",
        "    encoder json;",
        "}",
    ]
    for p in config.peers:
        lines += [
            f"neighbor {p.address} {{",
            f"    router-id {config.router_id};",
            f"    local-address {p.local_address};",
            f"    local-as {config.local_as};",
            f"    peer-as {p.asn};",
            f"    hold-time {p.hold_time};",
        ]
        if p.password is not None:
            lines.append(f"    md5-password {_quote(p.password)};")
        if p.multihop is not None:
            lines.append(f"    outgoing-ttl {p.multihop};")
        fams = " ".join(f"ipv{4 if f == 2 else 6} unicast;" for f in sorted(families) if f == p.family)
        lines += [
            f"    family {{ {fams} }}",
            f"    api {{ processes [ {PROCESS} ]; neighbor-changes; }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class NeighborState:
    peer: str
    state: str  # connected | up | down
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Malformed:
    line: str
    why: str


@dataclass(frozen=True, slots=True)
class Ignored:
    kind: str


Message = NeighborState | Ack | Shutdown | Malformed | Ignored

MAX_LINE = 1 << 20  # a longer line without a newline is not ExaBGP talking


class MessageReader:
    """Bytes from the message FIFO in, parsed messages out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            out.append(Malformed(self._buf[:80].decode(errors="replace"), "line too long"))
            self._buf = b""
        for raw in lines:
            line = raw.strip()
            if line:
                out.append(parse(line.decode(errors="replace")))
        return out


def parse(line: str) -> Message:
    if line == "done":
        return Ack(True)
    if line == "error":
        return Ack(False)
    if line == "shutdown":
        return Shutdown()
    try:
        msg: Any = json.loads(line)
    except ValueError as e:
        return Malformed(line[:200], f"not JSON: {e}")
    if not isinstance(msg, dict):
        return Malformed(line[:200], "not a JSON object")
    kind = msg.get("type")
    if kind == "state":
        try:
            n = msg["neighbor"]
            return NeighborState(str(n["address"]["peer"]), str(n["state"]), str(n.get("reason", "")))
        except (KeyError, TypeError):
            return Malformed(line[:200], "a state message without neighbor.address.peer and state")
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown()
    return Ignored(str(kind))
