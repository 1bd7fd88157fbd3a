"""systemd's notify protocol, spoken directly (no libsystemd).

A datagram of `KEY=value` lines to the socket named by $NOTIFY_SOCKET (a
path, or an abstract name starting with '@'). Without $NOTIFY_SOCKET every
call does nothing, so the daemon runs the same outside systemd. The watchdog
interval comes from $WATCHDOG_USEC (only when $WATCHDOG_PID is unset or ours);
the daemon pings at half of it from its event loop, so a stalled loop is
exactly what the watchdog catches.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("ipvsmgr")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self._sock: socket.socket | None = None
        self._address: str | bytes | None = None
        self.watchdog = watchdog_usec / 1e6  # seconds; 0 = no watchdog
        self.sent = 0
        self.errors = 0
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Notifier:
        env = dict(os.environ if env is None else env)
        watchdog = 0
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                watchdog = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                watchdog = 0
        return cls(env.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> None:
        """Send KEY=value lines (keyword names are the keys: READY=1, STATUS="...")."""
        if self._sock is None or self._address is None:
            return
        text = "\n".join(f"{k}={_one_line(str(v))}" for k, v in fields.items())
        try:
            self._sock.sendto(text.encode(), self._address)
            self.sent += 1
        except OSError as e:  # systemd going away must not take the daemon with it
            self.errors += 1
            log.warning("sd_notify %s failed: %s", ",".join(fields), e)

    def ready(self, status: str) -> None:
        self.notify(READY=1, STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload it asked for.
        self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.notify(STOPPING=1)

    def status(self, text: str) -> None:
        self.notify(STATUS=text)

    def ping(self) -> None:
        self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))
