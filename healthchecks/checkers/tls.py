"""TLS check: the real passes when a TLS handshake with it completes.

Options (`TlsCheck`):

- `sni`: server name to send and to verify the certificate against. Default
  none: no SNI is sent and, with `verify`, the certificate must name the
  target's IP address (an IP SAN).
- `verify` (default True): verify the chain and the name; `ca_file` (PEM)
  replaces the system trust store.
- `cert_file` / `key_file`: a client certificate to offer. With TLS 1.3 a
  server that requires one, and gets none or rejects it, says so only after
  the client's side of the handshake is complete (RFC 8446 4.4.2.4): after
  a TLS 1.3 handshake the check keeps reading for twice the handshake's
  time (at least 50 ms, within the timeout), and an alert or a close in
  that window fails it: `client certificate rejected: tlsv13 alert
  certificate required`, `... sslv3 alert bad certificate`,
  `connection closed after the handshake`. Data from the server (a
  protocol whose server speaks first) or silence passes.
- `min_days_left`: fail when the peer certificate expires in fewer days. The
  expiry is read from the DER certificate itself, so it also works with
  `verify` off (where `getpeercert()` is empty).

Port 0 in the target means 443.

Reasons: `certificate verify failed: certificate has expired`,
`certificate verify failed: Hostname mismatch, certificate is not valid for 'x'`,
`certificate verify failed: IP address mismatch, ...`,
`certificate verify failed: unable to get local issuer certificate`,
`handshake failed: <OpenSSL reason, e.g. wrong version number>`,
`handshake failed: connection closed` / `connection reset`,
`certificate expires in N days`, `certificate has expired` (min_days_left with
verify off), `tls setup failed: ...` (unreadable ca/cert/key file), the TLS
1.3 ones above, and the tcp reasons (`connect refused`, `timeout after 1s`, ...).
"""

from __future__ import annotations

import asyncio
import calendar
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

from healthchecks.checkers.tcp import CheckFailed, connect, guarded, os_reason, release
from healthchecks.result import Result, Target

_SSL_TEXT = re.compile(r"^\[[^\]]*\]\s*(.*?)\s*(?:\(_ssl\.c:\d+\))?$")


def ssl_reason(e: ssl.SSLError) -> str:
    """OpenSSL's words without the `[SSL: CODE]` prefix and `(_ssl.c:NNN)` suffix."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (e.verify_message or "").rstrip(".") or "certificate rejected"
    text = str(e.args[1]) if len(e.args) > 1 else str(e)
    m = _SSL_TEXT.match(text)
    if m and m.group(1):
        return m.group(1)
    if e.reason:
        return str(e.reason).lower().replace("_", " ")
    return text or type(e).__name__


def client_context(
    verify: bool, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client SSLContext; raises CheckFailed (`tls setup failed: ...`) for unreadable files."""
    try:
        if verify:
            ctx = ssl.create_default_context(cafile=ca_file)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        raise CheckFailed(f"tls setup failed: {ssl_reason(e)}") from None
    except OSError as e:
        raise CheckFailed(f"tls setup failed: {e.strerror or e}: {e.filename}") from None
    return ctx


async def open_tls(
    sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str | None, timeout: float, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over a TLS session on a connected socket; handshake failures as CheckFailed.

    `server_hostname` is sent as SNI when it is a name (never for an IP address)
    and is what the certificate is verified against.
    """
    try:
        return await asyncio.open_connection(
            sock=sock,
            ssl=ctx,
            server_hostname=server_hostname or "",
            ssl_handshake_timeout=timeout + 1,  # the check's own timeout fires first
            limit=limit,
        )
    except ssl.SSLCertVerificationError as e:
        raise CheckFailed(f"certificate verify failed: {ssl_reason(e)}") from None
    except ssl.SSLError as e:
        raise CheckFailed(f"handshake failed: {ssl_reason(e)}") from None
    except TimeoutError:
        raise
    except OSError as e:
        raise CheckFailed(f"handshake failed: {os_reason(e)}") from None


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the contents of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4 or pos + n > len(der):
            raise ValueError("bad length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("truncated")
    return tag, pos, pos + length


def der_not_after(der: bytes) -> float:
    """notAfter of a DER X.509 certificate, as seconds since the epoch (ValueError if unreadable).

    Certificate = SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } ... }
    """
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, pos, _ = _tlv(der, start)
    if tag != 0x30:
        raise ValueError("no tbsCertificate")
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # explicit version
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = _tlv(der, pos)
    tag, validity, _ = _tlv(der, pos)
    if tag != 0x30:
        raise ValueError("no validity")
    _, _, pos = _tlv(der, validity)  # notBefore
    tag, start, end = _tlv(der, pos)
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        m = re.fullmatch(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z", text)
        if not m:
            raise ValueError("bad UTCTime")
        year = int(m.group(1))
        year += 1900 if year >= 50 else 2000
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z", text)
        if not m:
            raise ValueError("bad GeneralizedTime")
        year = int(m.group(1))
    else:
        raise ValueError("bad notAfter")
    month, day, hour, minute, second = (int(g) for g in m.groups()[1:])
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


async def _server_verdict(reader: asyncio.StreamReader, window: float) -> None:
    """Read for `window` seconds after a TLS 1.3 handshake: the server's
    rejection of our certificate (or of its absence) arrives as an alert."""
    if window <= 0:
        return
    try:
        async with asyncio.timeout(window):
            data = await reader.read(1)
    except TimeoutError:
        return  # no verdict but acceptance: the server waits for the client to speak
    except ssl.SSLError as e:
        raise CheckFailed(f"client certificate rejected: {ssl_reason(e)}") from None
    except OSError as e:
        raise CheckFailed(f"{os_reason(e)} after the handshake") from None
    if not data:
        raise CheckFailed("connection closed after the handshake")


@dataclass(frozen=True, slots=True)
class TlsCheck:
    """Handshake only (see the module docstring for options and reasons)."""

    sni: str | None = None
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    min_days_left: int | None = None
    _ctx: list[ssl.SSLContext] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        if self.min_days_left is not None and self.min_days_left < 0:
            raise ValueError("min_days_left must be >= 0")

    def context(self) -> ssl.SSLContext:
        """The SSLContext, made on first use (files are read once per TlsCheck)."""
        if not self._ctx:
            self._ctx.append(client_context(self.verify, self.ca_file, self.cert_file, self.key_file))
        return self._ctx[0]

    async def check(self, target: Target, timeout: float) -> Result:
        return await guarded(self._check(target, timeout), timeout)

    async def _check(self, target: Target, timeout: float) -> Result:
        ctx = self.context()
        server_hostname = self.sni or target.address.partition("%")[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sock = await connect(target, target.port or 443)
        writer = None
        try:
            started = loop.time()
            reader, writer = await open_tls(sock, ctx, server_hostname, timeout, 2**16)
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.version() == "TLSv1.3":
                handshake = loop.time() - started
                await _server_verdict(reader, min(max(0.05, 2 * handshake), deadline - loop.time() - 0.01))
            if self.min_days_left is not None:
                ssl_object = writer.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
                if not der:
                    raise CheckFailed("no peer certificate")
                try:
                    left = der_not_after(der) - time.time()
                except (ValueError, UnicodeError):
                    raise CheckFailed("unreadable peer certificate") from None
                if left < 0:
                    raise CheckFailed("certificate has expired")
                days = int(left // 86400)
                if days < self.min_days_left:
                    raise CheckFailed(f"certificate expires in {days} days")
            return Result.up()
        finally:
            await release(sock, writer)
