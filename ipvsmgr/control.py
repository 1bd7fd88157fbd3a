"""The control socket: a local Unix socket the CLI talks to the daemon through.

One JSON object per line each way. A request names a command and its
arguments; the reply says ok with a result, or not ok with an error an
operator can act on:

    {"command": "drain", "args": {"virtual_server": "web", "real": "198.18.1.11:8080"}}
    {"ok": true, "result": {...}}
    {"ok": false, "error": "no virtual server named 'x' (virtual servers: dns, web)"}

Parsing is pure (`parse_request`) and every refused request is counted by
reason; a client that sends garbage, too much, or nothing gets an error and
its connection closed, and nothing else is affected. The socket is root-only
(0600) unless a group is configured (0660, that group).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ipvsmgr.conncap import ConnectionCap

log = logging.getLogger("ipvsmgr.control")

DEFAULT_SOCKET = "/run/ipvsmgr/control.sock"
MAX_LINE = 64 * 1024  # bytes in one request
IDLE_TIMEOUT = 30.0  # seconds a connection may sit without a complete request
MAX_CONNECTIONS = 64  # open at once: more are closed at once and counted
WRITE_TIMEOUT = 30.0  # seconds a client may take to read a reply

# command -> its arguments (all strings; a trailing "?" marks an optional one)
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "status": (),
    "reload": ("force?",),  # force: "yes" passes the removal guard
    "drain": ("virtual_server", "real"),
    "undrain": ("virtual_server", "real"),
    "disable": ("virtual_server",),
    "enable": ("virtual_server",),
    "drain_node": (),
    "undrain_node": (),
    "vrrp_release": ("instance",),
    "vrrp_reclaim": ("instance",),
    "xdp_status": (),
    "xdp_block": ("prefix", "action"),  # action: drop | tarpit | remove
    "xdp_allow": ("prefix", "action"),  # action: add | remove
    "real_add": ("virtual_server", "real", "weight?"),
    "real_remove": ("virtual_server", "real"),
    "real_weight": ("virtual_server", "real", "weight"),
}


@dataclass(frozen=True, slots=True)
class Request:
    command: str
    args: Mapping[str, str]


class RequestError(Exception):
    """A request the daemon cannot take; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CommandError(Exception):
    """A well-formed command that cannot be done (an unknown name, say); the message says why."""


def parse_request(line: bytes) -> Request:
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError("bad_json", f"not a JSON object: {e}") from None
    if not isinstance(raw, dict):
        raise RequestError("bad_json", "a request is a JSON object with 'command' and 'args'")
    unknown = set(raw) - {"command", "args"}
    if unknown:
        raise RequestError("bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    command = raw.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        known = ", ".join(COMMANDS)
        raise RequestError("unknown_command", f"unknown command {command!r} (commands: {known})")
    args = raw.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("bad_request", "'args' must be an object")
    wanted = COMMANDS[command]
    extra = set(args) - {w.rstrip("?") for w in wanted}
    if extra:
        raise RequestError("bad_request", f"{command} takes no argument(s) {', '.join(sorted(extra))}")
    for spec in wanted:
        name = spec.rstrip("?")
        if spec.endswith("?") and name not in args:
            continue
        value = args.get(name)
        if not isinstance(value, str) or not value:
            raise RequestError("bad_request", f"{command} needs '{name}' (a non-empty string)")
    return Request(command, dict(args))


def encode_reply(ok: bool, result: Any = None, error: str | None = None) -> bytes:
    reply: dict[str, Any] = {"ok": ok}
    if ok:
        reply["result"] = result
    else:
        reply["error"] = error
    return json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n"


Handler = Callable[[Request], Awaitable[Any]]


class ControlServer:
    """Serves requests on a Unix socket until close()."""

    def __init__(self, path: str, handler: Handler, group: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self._last_status: object = None  # the last `status` answer, and its encoding
        self._last_reply = b""
        self.requests: Counter[str] = Counter()  # command -> handled
        self.refused: Counter[str] = Counter()  # reason -> refused requests
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.cap = ConnectionCap("control socket", MAX_CONNECTIONS, self.refused)

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        _remove_stale(self.path)
        gid = -1
        if self.group is not None:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise OSError(errno.EINVAL, f"control socket group {self.group!r} does not exist") from None
        # Created with no access at all, then opened up: never briefly world-connectable.
        # The umask is process-wide, so it is set only around the bind() itself: held
        # across an await, other tasks would create files with mode 000 meanwhile
        # (which root without CAP_DAC_OVERRIDE, as the unit runs it, cannot open).
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o777)
        try:
            sock.bind(self.path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        if gid >= 0:
            os.chown(self.path, 0, gid)
        os.chmod(self.path, 0o660 if gid >= 0 else 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.cap.admit(writer):
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (ValueError, asyncio.LimitOverrunError):
                    self.refused["too_long"] += 1
                    writer.write(encode_reply(False, error=f"request longer than {MAX_LINE} bytes"))
                    break
                except TimeoutError:
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(await self._answer(line))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except TimeoutError:
            self.refused["slow_reader"] += 1
            writer.transport.abort()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never silently: the client would see its connection just close
            log.exception("control connection failed")
            self.refused["internal_error"] += 1
        finally:
            self.cap.release()
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        try:
            req = parse_request(line)
        except RequestError as e:
            self.refused[e.reason] += 1
            return encode_reply(False, error=str(e))
        self.requests[req.command] += 1
        try:
            result = await self.handler(req)
            # A burst of `status` gets one shared answer (ipvsmgr/fresh.py): encode it once too
            # (at 10,000 reals it is megabytes of JSON).
            if req.command == "status" and result is self._last_status:
                return self._last_reply
            reply = encode_reply(True, result)
            if req.command == "status":
                self._last_status, self._last_reply = result, reply
            return reply
        except CommandError as e:
            self.refused["command_failed"] += 1
            return encode_reply(False, error=str(e))
        except Exception as e:  # a bug must not take the socket (or the daemon) down
            log.exception("control command %s failed", req.command)
            self.refused["internal_error"] += 1
            return encode_reply(False, error=f"internal error: {type(e).__name__}: {e}")


def _remove_stale(path: str) -> None:
    """Unlink a socket left by a daemon that died; refuse if one is still serving."""
    if not os.path.exists(path):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        s.close()
    raise OSError(errno.EADDRINUSE, f"another ipvsmgr is serving {path}")


class ControlError(Exception):
    """The CLI could not get an answer (no daemon, no permission) or the daemon said no."""


def call(path: str, command: str, args: Mapping[str, str] | None = None, timeout: float = 30.0) -> Any:
    """One request to the daemon; its result, or ControlError with the daemon's message."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"no ipvsmgr daemon is listening on {path} (is `ipvsmgr run` running?)"
            ) from None
        except PermissionError:
            raise ControlError(f"no permission to use {path} (root, or the control socket's group)") from None
        s.sendall(json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise ControlError(f"the daemon did not answer within {timeout:g}s") from None
    except OSError as e:
        raise ControlError(f"talking to {path}: {e}") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"the daemon's reply is not JSON: {buf[:200]!r}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"unexpected reply: {buf[:200]!r}")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
