"""The control socket: request parsing (pure) and a real Unix socket served on a loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from ipvsmgr.control import (
    MAX_LINE,
    CommandError,
    ControlError,
    ControlServer,
    Request,
    RequestError,
    call,
    parse_request,
)


def test_parse_good_requests() -> None:
    assert parse_request(b'{"command": "status"}\n') == Request("status", {})
    r = parse_request(
        json.dumps({"command": "drain", "args": {"virtual_server": "web", "real": "1.2.3.4"}}).encode()
    )
    assert r.args == {"virtual_server": "web", "real": "1.2.3.4"}


@pytest.mark.parametrize(
    ("line", "reason", "text"),
    [
        (b"not json", "bad_json", "not a JSON object"),
        (b"[1, 2]", "bad_json", "a request is a JSON object"),
        (b'{"command": "rm -rf"}', "unknown_command", "unknown command 'rm -rf' (commands: status, reload"),
        (b'{"command": 7}', "unknown_command", "unknown command 7"),
        (b'{"command": "status", "x": 1}', "bad_request", "unknown field(s): x"),
        (b'{"command": "drain", "args": {"virtual_server": "web"}}', "bad_request", "drain needs 'real'"),
        (
            b'{"command": "drain", "args": {"virtual_server": "web", "real": 5}}',
            "bad_request",
            "needs 'real'",
        ),
        (b'{"command": "status", "args": {"a": "b"}}', "bad_request", "status takes no argument(s) a"),
        (b'{"command": "status", "args": []}', "bad_request", "'args' must be an object"),
        (b"\xff\xfe", "bad_json", "not a JSON object"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(line: bytes, reason: str, text: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_request(line)
    assert e.value.reason == reason
    assert text in str(e.value)


async def _handler(req: Request) -> Any:
    if req.command == "status":
        return {"hello": "world"}
    if req.command == "disable":
        raise CommandError(f"no virtual server named {req.args['virtual_server']!r} (virtual servers: web)")
    raise RuntimeError("boom")


def _serve(tmp_path: Path, body: Any, group: str | None = None) -> Any:
    path = str(tmp_path / "run" / "ctl.sock")

    async def main() -> Any:
        server = ControlServer(path, _handler, group)
        await server.start()
        try:
            return await body(path, server)
        finally:
            await server.close()

    return asyncio.run(main())


def test_a_served_socket_answers_refuses_and_counts(tmp_path: Path) -> None:
    async def body(path: str, server: ControlServer) -> None:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600  # root only by default
        assert await asyncio.to_thread(call, path, "status") == {"hello": "world"}
        with pytest.raises(ControlError, match="no virtual server named 'x'"):
            await asyncio.to_thread(call, path, "disable", {"virtual_server": "x"})
        with pytest.raises(ControlError, match="internal error: RuntimeError: boom"):
            await asyncio.to_thread(call, path, "reload")

        def raw(data: bytes) -> list[dict[str, Any]]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                buf = b""
                while chunk := s.recv(65536):
                    buf += chunk
            return [json.loads(x) for x in buf.splitlines()]

        # Several requests on one connection; garbage between them is answered, not fatal.
        replies = await asyncio.to_thread(raw, b'{"command": "status"}\ngarbage\n\n{"command": "status"}\n')
        assert [r["ok"] for r in replies] == [True, False, True]
        too_long = await asyncio.to_thread(raw, b"x" * (MAX_LINE + 10) + b"\n")
        assert too_long == [{"ok": False, "error": f"request longer than {MAX_LINE} bytes"}]
        assert server.refused == {"command_failed": 1, "internal_error": 1, "bad_json": 1, "too_long": 1}
        assert server.requests["status"] == 3

    _serve(tmp_path, body)
    assert not (tmp_path / "run" / "ctl.sock").exists()  # removed on close


def test_other_tasks_never_run_under_the_sockets_umask(tmp_path: Path) -> None:
    """The no-access umask is process-wide: while it is set, files other tasks
    make (ExaBGP's FIFOs, state) would get mode 000, and the unit's root
    without CAP_DAC_OVERRIDE could not open them again."""
    seen: list[int] = []

    async def main() -> None:
        async def other() -> None:
            for _ in range(50):
                current = os.umask(0o022)
                os.umask(current)
                seen.append(current)
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)  # it runs once before the server starts
        server = ControlServer(str(tmp_path / "ctl.sock"), _handler)
        await server.start()
        await task
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        await server.close()

    before = os.umask(0o022)
    try:
        asyncio.run(main())
    finally:
        os.umask(before)
    assert set(seen) == {0o022}, [oct(m) for m in set(seen)]


def test_a_group_gets_0660(tmp_path: Path) -> None:
    import grp

    group = grp.getgrgid(os.getgid()).gr_name

    async def body(path: str, server: ControlServer) -> None:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()

    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    _serve(tmp_path, body, group)


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ctl.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a file nobody listens on: what a killed daemon leaves

    async def body(p: str, server: ControlServer) -> None:
        assert await asyncio.to_thread(call, p, "status") == {"hello": "world"}
        second = ControlServer(p, _handler)
        with pytest.raises(OSError, match="another ipvsmgr is serving"):
            await second.start()

    _serve(tmp_path, body)


def test_the_client_says_when_no_daemon_listens(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no ipvsmgr daemon is listening on"):
        call(str(tmp_path / "nothing.sock"), "status")


def test_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    async def main() -> None:
        server = ControlServer(str(tmp_path / "c.sock"), _handler, "no-such-group-xyz")
        with pytest.raises(OSError, match="group 'no-such-group-xyz' does not exist"):
            await server.start()

    asyncio.run(main())
