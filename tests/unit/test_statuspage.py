"""The status page on the metrics listener (ipvsmgr/statuspage.py): served with its data on
loopback; on any other address refused without a token, and with one only to a request carrying it
(Bearer or basic auth), /metrics included. The page loads nothing from elsewhere."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ipvsmgr import statuspage
from ipvsmgr.ipvs.model import Table
from ipvsmgr.metrics import MetricsServer, Snapshot

TOKEN = "s3cret-token-for-tests"


def snap() -> Snapshot:
    return Snapshot(version="1")


async def status() -> dict[str, Any]:
    return {"daemon": {"pid": 1}, "virtual_servers": [{"name": "web", "reals": []}]}


def get(port: int, path: str, auth: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def serve(host: str, token: str | None, check: Any) -> MetricsServer:
    async def main() -> MetricsServer:
        server = MetricsServer(host, 0, snap, Table, fresh=0.0, status=status, token=token)
        await server.start()
        try:
            await asyncio.to_thread(check, server.port)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


def test_on_loopback_the_page_and_its_data_are_served() -> None:
    def check(port: int) -> None:
        code, body, headers = get(port, "/")
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert b'fetch("status.json"' in body
        code, body, headers = get(port, "/status.json")
        assert code == 200 and json.loads(body)["virtual_servers"][0]["name"] == "web"
        assert get(port, "/metrics")[0] == 200

    serve("127.0.0.1", None, check)


def test_elsewhere_without_a_token_the_page_is_refused_and_metrics_stay_open() -> None:
    def check(port: int) -> None:
        for path in ("/", "/status.json"):
            code, body, _ = get(port, path)
            assert code == 403 and b"--status-auth" in body, (path, code, body)
        assert get(port, "/metrics")[0] == 200

    server = serve("0.0.0.0", None, check)  # every address: not loopback only
    assert server.refused["no_auth_configured"] == 2


def test_with_a_token_every_path_needs_it() -> None:
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"anyone:guess-guess").decode()

    def check(port: int) -> None:
        for path in ("/", "/status.json", "/metrics"):
            code, _, headers = get(port, path)
            assert code == 401 and headers["WWW-Authenticate"].startswith('Basic realm="ipvsmgr"'), path
            assert get(port, path, wrong)[0] == 401
            assert get(port, path, "Bearer nope-nope-nope")[0] == 401
            assert get(port, path, f"Bearer {TOKEN}")[0] == 200
            assert get(port, path, basic)[0] == 200

    server = serve("0.0.0.0", TOKEN, check)
    assert server.refused["unauthorized"] == 9


def test_authorization_header_forms() -> None:
    b64 = base64.b64encode
    assert statuspage.authorized(f"Bearer {TOKEN}", TOKEN)
    assert statuspage.authorized(f"bearer   {TOKEN} ", TOKEN)
    assert statuspage.authorized("Basic " + b64(f"u:{TOKEN}".encode()).decode(), TOKEN)
    assert not statuspage.authorized("Basic " + b64(TOKEN.encode()).decode(), TOKEN)  # no user:pass
    assert not statuspage.authorized("Basic !!!notbase64", TOKEN)
    assert not statuspage.authorized("Digest x", TOKEN)
    assert not statuspage.authorized(None, TOKEN)
    assert not statuspage.authorized(f"Bearer {TOKEN}x", TOKEN)


def test_token_files(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(f"{TOKEN}\nignored\n")
    assert statuspage.read_token(str(good)) == TOKEN
    cases = {"missing": None, "empty": "", "short": "abc\n", "big": "x" * 5000}
    for name, text in cases.items():
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises(statuspage.AuthFileError):
            statuspage.read_token(str(p))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(statuspage.AuthFileError, match="not a regular file"):
        statuspage.read_token(str(fifo))  # and never hangs on it


def test_loopback_addresses() -> None:
    assert statuspage.is_loopback("127.0.0.1") and statuspage.is_loopback("::1")
    assert statuspage.is_loopback("127.1.2.3") and statuspage.is_loopback("localhost")
    assert not statuspage.is_loopback("0.0.0.0") and not statuspage.is_loopback("::")
    assert not statuspage.is_loopback("198.18.0.1")


def test_the_page_loads_nothing_from_elsewhere_and_writes_text_only() -> None:
    page = statuspage.PAGE
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "innerHTML" not in page and "eval(" not in page  # text goes in through textContent
