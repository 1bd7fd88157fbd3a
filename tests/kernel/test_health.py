"""`ipvsmgr run` in the VM: health checks drive IPVS weights, quorum and the sorry server."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.kernel.helpers import Lab, in_netns, ipvsadm

INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 2
CONFIG = f"""\
ipvs: {{drain_timeout: 5s}}
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    scheduler: wrr
    health_check:
      {{type: tcp, interval: {INTERVAL}s, timeout: {TIMEOUT}s, rise: {RISE}, fall: {FALL}, jitter: 0}}
    quorum: {{min_up: 2}}
    sorry_server: {{address: 198.18.2.9, port: 8080}}
    reals:
      - {{address: 198.18.2.2, port: 8080, weight: 5}}
      - {{address: 198.18.2.3, port: 8080, weight: 5}}
"""


class Server:
    """A TCP listener in the real-server namespace that can be stopped and started."""

    def __init__(self, addr: str, port: int) -> None:
        self.addr, self.port = addr, port
        self.sock: socket.socket | None = None

    def start(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.addr, self.port))
            s.listen(128)
            return s

        self.sock = in_netns("rs", make)
        sock = self.sock

        def accept() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                conn.close()

        threading.Thread(target=accept, daemon=True).start()

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None


def weights() -> dict[str, int]:
    out = {}
    for line in ipvsadm("-Ln").splitlines():
        parts = line.split()
        if line.strip().startswith("->") and parts[1][0].isdigit():
            out[parts[1]] = int(parts[3])
    return out


def wait_for(what: Callable[[], bool], limit: float, step: float = 0.05) -> float:
    start = time.monotonic()
    while not what():
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit}s; table: {weights()}")
        time.sleep(step)
    return time.monotonic() - start


def test_health_drives_weights_quorum_sorry_and_reload(ipvs: Lab, nat_lab: None) -> None:
    # keepalived's quorum_up / quorum_down / omega: each appends its word to a file
    marks = ipvs.work / "quorum-events"
    say = f"[/bin/sh, -c, 'echo $0 >> {marks}'"
    commands = f", up_command: {say}, up], down_command: {say}, down], down_on_stop: true}}"
    text = CONFIG.replace("quorum: {min_up: 2}", "quorum: {min_up: 2" + commands)
    # keepalived's notify_up / notify_down on real a: its own file
    real_marks = ipvs.work / "real-events"
    tell = f"[/bin/sh, -c, 'echo $0 >> {real_marks}'"
    text = text.replace(
        "{address: 198.18.2.2, port: 8080, weight: 5}",
        f"{{address: 198.18.2.2, port: 8080, weight: 5, notify_up: {tell}, up], notify_down: {tell}, down]}}",
    )
    cfg = ipvs.write("lb.yaml", text)
    log = Path(ipvs.work / "daemon.log")
    servers = {a: Server(a, 8080) for a in ("198.18.2.2", "198.18.2.3")}
    for s in servers.values():
        s.start()
    daemon = ipvs.daemon(cfg, log)
    try:
        a, b, sorry = "198.18.2.2:8080", "198.18.2.3:8080", "198.18.2.9:8080"
        # new reals start out of rotation and come in after `rise` passes
        wait_for(lambda: weights().get(a) == 5 and weights().get(b) == 5, 60)
        assert sorry not in weights()

        # a real server dies: weight 0 within fall x interval + timeout (+ the reconcile itself)
        servers["198.18.2.2"].stop()
        took = wait_for(lambda: weights().get(a) == 0, FALL * INTERVAL + TIMEOUT + 0.5)
        print(
            f"down detected and applied in {took:.2f}s (bound {FALL * INTERVAL + TIMEOUT:.1f}s + reconcile)"
        )
        # one real up < min_up 2: the sorry server takes over
        wait_for(lambda: weights().get(sorry) == 1, 5)
        assert weights()[b] == 5
        events = log.read_text()
        assert f"real {a} of tcp 198.18.0.10:80 DOWN: connect refused" in events, events
        assert "virtual server web (tcp 198.18.0.10:80) quorum LOST: 1 reals up, weight 5" in events
        # up once both reals first passed (they start down), down now
        wait_for(lambda: marks.exists() and marks.read_text() == "up\ndown\n", 5)
        wait_for(lambda: real_marks.exists() and real_marks.read_text() == "up\ndown\n", 5)

        # it comes back after `rise` passes, and the sorry server leaves
        servers["198.18.2.2"].start()
        took = wait_for(lambda: weights().get(a) == 5 and sorry not in weights(), RISE * INTERVAL + 3.0)
        print(f"recovery applied in {took:.2f}s")
        wait_for(lambda: marks.read_text() == "up\ndown\nup\n", 5)
        wait_for(lambda: real_marks.read_text() == "up\ndown\nup\n", 5)

        # reload with the reals unchanged (scheduler edited): no real leaves rotation
        Path(cfg).write_text(text.replace("scheduler: wrr", "scheduler: rr"))
        mark = log.stat().st_size
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in log.read_text()[mark:], 60)
        wait_for(lambda: ipvsadm("-Ln").splitlines()[3].split()[2] == "rr", 10)
        end = time.monotonic() + 3 * INTERVAL * max(RISE, FALL)
        while time.monotonic() < end:  # health state survived: weights never dropped
            assert weights() == {a: 5, b: 5}, weights()
            time.sleep(0.05)
        after = log.read_text()[mark:]
        assert "reloaded" in after and "DOWN" not in after, after

        # an invalid file is refused with positions, the running configuration stays
        Path(cfg).write_text(text.replace("port: 80\n", "port: eighty\n"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 60)
        line = CONFIG.splitlines().index("    port: 80") + 1
        assert f"{cfg}:{line}:11: expected integer" in log.read_text()
        assert daemon.poll() is None and weights() == {a: 5, b: 5}
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.stop()
    assert code == 0, log.read_text()[-3000:]
    assert "198.18.0.10:80" in ipvsadm("-Ln")  # left in place for a hitless restart
    assert marks.read_text() == "up\ndown\nup\ndown\n"  # and down_on_stop (omega) as it stopped
    assert real_marks.read_text() == "up\ndown\nup\n"  # the reload and the stop are no check's verdict
