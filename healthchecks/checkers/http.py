"""HTTP and HTTPS checks: one HTTP/1.1 request (`Connection: close`) over asyncio streams.

Options (`HttpCheck`):

- `tls`: False for http, True for https. Port 0 in the target means 80 / 443.
- `method` (default GET; HEAD reads no body), `path` (default /).
- `host`: the Host header. Default: the target address (IPv6 in brackets),
  with `:port` when the port is not the scheme's default.
- `expect_status`: codes that pass, ints and/or "NNN-MMM" ranges; default
  ("200-299",). Redirects are not followed: a 301 is `status 301` unless listed.
- The body is read only when something judges it. A status-only check (no
  `body_regex`, no `body_sha256`) passes on the status line and headers and
  closes, whatever the body's size: a 100 MB page answering 200 is up.
- `body_regex`: `re.search` over the first `max_body_bytes` of the body,
  decoded with the response's charset (default UTF-8, undecodable bytes
  replaced); a longer body is not a failure, only what lies beyond the limit
  is not searched. `body_sha256`: hex SHA-256 of the whole body (after
  de-chunking), which must fit in `max_body_bytes`; `body_md5` the same with
  MD5 (keepalived's HTTP_GET digest). One of the three at most.
- `max_body_bytes` (default 64 KiB, up to 2 GiB): how much body is read. A
  digest of a longer body fails `body larger than N bytes` (a declared
  Content-Length or chunk size beyond N fails before reading it); at most
  N+1 bytes are read either way. A body that is read is read to its end
  (Content-Length, chunked, or the close) or to the limit, so a truncated
  one fails.
- A body with a Content-Encoding (the request asks for identity; some
  servers gzip anyway) is judged as it came; a mismatch says so:
  `body does not match /x/ (the body is gzip-encoded)`.
- TLS: `sni` (default: the Host header's name when it is a hostname, none for
  an IP address), `verify` (default True; the name verified is `sni`, else the
  Host header's name or IP), `ca_file` (PEM, replaces the system trust store),
  `cert_file` / `key_file` (client certificate; the key may be in cert_file).

Reasons: `connect refused`, `timeout after 1s`, `status 503`,
`body does not match /regex/` (`... in its first N bytes` when the body was
longer), `body digest mismatch`, `body larger than N bytes` (digests only),
`connection reset`,
`connection closed before a response`, `connection closed mid-response`,
`garbage response: b'...'` (first 40 bytes, when the reply is not an HTTP
status line), `bad chunked encoding`, `bad content-length`,
`response headers too large`, `certificate verify failed: <OpenSSL reason>`,
`handshake failed: <OpenSSL reason>`, `tls error: <OpenSSL reason>` (a TLS
alert after the handshake, e.g. `tls error: tlsv13 alert certificate required`
when a TLS 1.3 server rejects the client certificate), `tls setup failed: ...`,
and the tcp ones (`host unreachable`, `source address not available`, ...).

A TLS 1.3 server that rejects the client certificate and then closes with the
request unread sends a RST right after its alert; if that RST arrives before
the request is written, the write fails first and the reason is
`connection reset` (still a failure; servers that close gracefully, as nginx
does, give the `tls error` above).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from healthchecks.checkers.tcp import CheckFailed, connect, guarded, release
from healthchecks.checkers.tls import client_context, open_tls, ssl_reason
from healthchecks.result import Result, Target

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?:[ \t][^\r\n]*)?\r?\n")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # a request target or Host value (encode IDNs yourself)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHARSET = re.compile(r"""charset\s*=\s*"?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_MAX_HEAD = 64 * 1024  # status line + headers (and trailers) of one response
_READ = 16 * 1024


def _parse_status(spec: int | str) -> tuple[int, int]:
    if isinstance(spec, bool):
        raise ValueError(f"bad status {spec!r}")
    if isinstance(spec, int):
        lo = hi = spec
    else:
        m = re.fullmatch(r"\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?", spec)
        if not m:
            raise ValueError(f"bad status {spec!r}: expected a code or NNN-MMM")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 100 <= lo <= hi <= 599:
        raise ValueError(f"bad status {spec!r}")
    return lo, hi


def _host_name(host: str) -> str:
    """The name or address in a Host header, without port or brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


class _Stream:
    """A byte buffer in front of a StreamReader, so reads can be sized exactly."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.buf = bytearray()
        self.eof = False

    async def fill(self, n: int = _READ) -> bool:
        """Append up to n more bytes; False at the end of the stream."""
        if self.eof:
            return False
        data = await self._reader.read(max(n, 1))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def line(self, limit: int) -> bytes:
        while (i := self.buf.find(b"\n")) < 0:
            if len(self.buf) > limit:
                raise CheckFailed("response headers too large")
            if not await self.fill():
                raise CheckFailed("connection closed mid-response")
        if i > limit:
            raise CheckFailed("response headers too large")
        return self.take(i + 1)

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill(min(_READ, n - len(self.buf))):
                raise CheckFailed("connection closed mid-response")
        return self.take(n)


async def _read_head(s: _Stream) -> tuple[int, dict[bytes, list[bytes]]]:
    """Status code and headers (lower-case names) of the final response; 1xx are skipped."""
    while True:
        while (end := s.buf.find(b"\n")) < 0:
            n = min(len(s.buf), 5)
            if s.buf[:n] != b"HTTP/"[:n] or len(s.buf) > _MAX_HEAD:
                raise CheckFailed(f"garbage response: {bytes(s.buf[:40])!r}")
            if not await s.fill():
                if s.buf:
                    raise CheckFailed("connection closed mid-response")
                raise CheckFailed("connection closed before a response")
        m = _STATUS_LINE.fullmatch(s.buf, 0, end + 1)
        if not m:
            raise CheckFailed(f"garbage response: {bytes(s.buf[:40])!r}")
        status = int(m.group(1))
        s.take(end + 1)
        headers: dict[bytes, list[bytes]] = {}
        size = 0
        while (line := await s.line(_MAX_HEAD)).strip(b"\r\n"):
            size += len(line)
            if size > _MAX_HEAD:
                raise CheckFailed("response headers too large")
            name, sep, value = line.partition(b":")
            if sep and name and name == name.strip():
                headers.setdefault(name.lower(), []).append(value.strip())
        if not 100 <= status < 200 or status == 101:
            return status, headers


async def _read_chunked(s: _Stream, limit: int, whole: bool) -> tuple[bytes, bool]:
    body = bytearray()
    while True:
        size_field = (await s.line(_MAX_HEAD)).partition(b";")[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_field):
            raise CheckFailed("bad chunked encoding")
        size = int(size_field, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            if whole:
                raise CheckFailed(f"body larger than {limit} bytes")
            body += await s.exactly(limit - len(body))
            return bytes(body), False
        body += await s.exactly(size)
        end = await s.exactly(1)
        if end == b"\r":
            end = await s.exactly(1)
        if end != b"\n":  # CRLF after the data (a bare LF is tolerated)
            raise CheckFailed("bad chunked encoding")
    trailers = 0
    while trailers <= _MAX_HEAD:  # the trailer section; a close right after the last chunk is fine
        try:
            line = await s.line(_MAX_HEAD)
        except CheckFailed:
            if s.eof:
                break
            raise
        if not line.strip(b"\r\n"):
            break
        trailers += len(line)
    else:
        raise CheckFailed("response headers too large")
    return bytes(body), True


async def _read_body(
    s: _Stream, headers: dict[bytes, list[bytes]], limit: int, whole: bool
) -> tuple[bytes, bool]:
    """The body, or its first `limit` bytes when it is longer and not needed
    `whole` (then the flag is False); a longer body needed whole fails."""
    codings = b",".join(headers.get(b"transfer-encoding", []))
    if codings:
        if codings.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
            return await _read_chunked(s, limit, whole)
    elif b"content-length" in headers:
        values = {v.strip() for v in b",".join(headers[b"content-length"]).split(b",")}
        if len(values) != 1 or not (value := values.pop()).isdigit():
            raise CheckFailed("bad content-length")
        length = int(value)
        if length > limit:
            if whole:
                raise CheckFailed(f"body larger than {limit} bytes")
            return await s.exactly(limit), False
        return await s.exactly(length), True
    while len(s.buf) <= limit and await s.fill(min(_READ, limit + 1 - len(s.buf))):
        pass
    if len(s.buf) > limit:
        if whole:
            raise CheckFailed(f"body larger than {limit} bytes")
        return s.take(limit), False
    return s.take(len(s.buf)), True


def _decode(body: bytes, headers: dict[bytes, list[bytes]]) -> str:
    charset = "utf-8"
    content_type = b",".join(headers.get(b"content-type", [])).decode("latin-1")
    if m := _CHARSET.search(content_type):
        with contextlib.suppress(LookupError):
            charset = codecs.lookup(m.group(1)).name
    return body.decode(charset, errors="replace")


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """One HTTP(S) request; see the module docstring for options and reasons."""

    tls: bool = False
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: Sequence[int | str] = ("200-299",)
    body_regex: str | None = None
    body_sha256: str | None = None
    body_md5: str | None = None  # keepalived's HTTP_GET digest
    max_body_bytes: int = 64 * 1024
    sni: str | None = None
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    _ranges: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _ctx: list[ssl.SSLContext] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the options (a bad one is a configuration error: ValueError)."""
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"bad method {self.method!r}")
        if not (self.path.startswith("/") or self.path == "*") or not _PRINTABLE.fullmatch(self.path):
            raise ValueError(f"bad path {self.path!r}: starts with /, printable ASCII, no spaces")
        if self.host is not None and not _PRINTABLE.fullmatch(self.host):
            raise ValueError(f"bad host {self.host!r}: printable ASCII, no spaces")
        if isinstance(self.expect_status, str | int):
            raise ValueError("expect_status is a list of codes and NNN-MMM ranges")
        ranges = tuple(_parse_status(s) for s in self.expect_status)
        if not ranges:
            raise ValueError("expect_status is empty")
        object.__setattr__(self, "expect_status", tuple(self.expect_status))
        object.__setattr__(self, "_ranges", ranges)
        if sum(x is not None for x in (self.body_regex, self.body_sha256, self.body_md5)) > 1:
            raise ValueError("body_regex, body_sha256 and body_md5 are exclusive")
        try:
            regex = None if self.body_regex is None else re.compile(self.body_regex)
        except re.error as e:
            raise ValueError(f"bad body_regex: {e}") from None
        object.__setattr__(self, "_regex", regex)
        if self.body_sha256 is not None:
            if not re.fullmatch(r"[0-9A-Fa-f]{64}", self.body_sha256):
                raise ValueError("body_sha256 is 64 hex digits")
            object.__setattr__(self, "body_sha256", self.body_sha256.lower())
        if self.body_md5 is not None:
            if not re.fullmatch(r"[0-9A-Fa-f]{32}", self.body_md5):
                raise ValueError("body_md5 is 32 hex digits")
            object.__setattr__(self, "body_md5", self.body_md5.lower())
        if self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        if not self.tls and (self.sni or self.ca_file or self.cert_file or self.key_file):
            raise ValueError("sni, ca_file, cert_file and key_file need tls")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")

    def context(self) -> ssl.SSLContext:
        """The SSLContext, made on first use (files are read once per HttpCheck)."""
        if not self._ctx:
            self._ctx.append(client_context(self.verify, self.ca_file, self.cert_file, self.key_file))
        return self._ctx[0]

    def host_header(self, target: Target) -> str:
        if self.host is not None:
            return self.host
        port = target.port or (443 if self.tls else 80)
        address = target.address.partition("%")[0]
        host = f"[{address}]" if ":" in address else address
        return host if port == (443 if self.tls else 80) else f"{host}:{port}"

    def server_hostname(self, host: str) -> str | None:
        """SNI and name to verify: `sni`, else the Host header's name or IP (no SNI for an IP)."""
        return self.sni or _host_name(host) or None

    async def check(self, target: Target, timeout: float) -> Result:
        return await guarded(self._check(target, timeout), timeout)

    async def _check(self, target: Target, timeout: float) -> Result:
        ctx = self.context() if self.tls else None
        host = self.host_header(target)
        request = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: ipvsmgr-healthcheck\r\nAccept: */*\r\nAccept-Encoding: identity\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        sock = await connect(target, target.port or (443 if self.tls else 80))
        writer = None
        try:
            if ctx is not None:
                reader, writer = await open_tls(sock, ctx, self.server_hostname(host), timeout, _MAX_HEAD)
            else:
                reader, writer = await asyncio.open_connection(sock=sock, limit=_MAX_HEAD)
            try:
                return await self._exchange(reader, writer, request)
            except ssl.SSLCertVerificationError as e:
                raise CheckFailed(f"certificate verify failed: {ssl_reason(e)}") from None
            except ssl.SSLError as e:
                raise CheckFailed(f"tls error: {ssl_reason(e)}") from None
        finally:
            await release(sock, writer)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> Result:
        writer.write(request)
        await writer.drain()
        s = _Stream(reader)
        status, headers = await _read_head(s)
        if not any(lo <= status <= hi for lo, hi in self._ranges):
            return Result.down(f"status {status}")
        if self.method == "HEAD" or status in (204, 304):
            return Result.up()
        whole = self.body_sha256 is not None or self.body_md5 is not None
        if self._regex is None and not whole:
            return Result.up()  # status only: the body is not ours to judge
        body, complete = await _read_body(s, headers, self.max_body_bytes, whole)
        coding = b",".join(headers.get(b"content-encoding", [])).strip().lower()
        encoded = (
            f" (the body is {coding.decode('latin-1')}-encoded)" if coding not in (b"", b"identity") else ""
        )
        if self._regex is not None and not self._regex.search(_decode(body, headers)):
            pattern = self._regex.pattern
            if len(pattern) > 60:
                pattern = pattern[:57] + "..."
            where = "" if complete else f" in its first {self.max_body_bytes} bytes"
            return Result.down(f"body does not match /{pattern}/{where}{encoded}")
        if self.body_sha256 is not None and hashlib.sha256(body).hexdigest() != self.body_sha256:
            return Result.down(f"body digest mismatch{encoded}")
        if (
            self.body_md5 is not None
            and hashlib.md5(body, usedforsecurity=False).hexdigest() != self.body_md5
        ):
            return Result.down(f"body MD5 mismatch{encoded}")
        return Result.up()
