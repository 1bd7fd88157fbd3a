"""The lab itself: client and server namespaces reach each other, and only each other."""

from __future__ import annotations

import socket

from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab


def test_client_reaches_server_over_ipv4_and_ipv6(lab: Lab) -> None:
    def listen(family: int, addr: str) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((addr, 7000))
        s.listen()
        return s

    servers = [lab.in_server(lambda: listen(socket.AF_INET, SERVER4)),
               lab.in_server(lambda: listen(socket.AF_INET6, SERVER6))]  # fmt: skip
    for addr in (SERVER4, SERVER6):
        conn = lab.in_client(lambda a=addr: socket.create_connection((a, 7000), timeout=2))
        assert conn.getsockname()[0] in (CLIENT4, "2001:db8:200::1")
        conn.close()
    for s in servers:
        s.close()
