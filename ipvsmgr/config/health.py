"""health_check sections to HealthCheck values (checker objects built lazily by type)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from healthchecks.checkers import MissingPackage
from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.model import HealthCheck

# which options block each check type reads
BLOCK = {
    "tcp": None, "http": "http", "https": "http", "tls": "tls", "dns": "dns", "udp": "udp",
    "icmp": "icmp", "smtp": "smtp", "grpc": "grpc", "script": "script", "file": "file",
}  # fmt: skip
BLOCKS = {b for b in BLOCK.values() if b}
REQUIRED_BLOCK = {"dns", "script", "file"}


def merge(default: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """A real's health_check over its virtual server's: keys replace, option blocks merge."""
    out = dict(default or {})
    for key, value in (override or {}).items():
        if key in BLOCKS and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if override and "type" in override and default and override["type"] != default.get("type"):
        # another type: the default's options block belongs to the old type
        old = BLOCK.get(str(default.get("type")))
        if old and old not in override and old != BLOCK.get(override["type"]):
            out.pop(old, None)
    return out


def _bytes(opts: dict[str, Any], text_key: str, hex_key: str) -> bytes | None:
    if hex_key in opts:
        return bytes.fromhex(opts[hex_key])
    if text_key in opts:
        return str(opts[text_key]).encode()
    return None


def _make_checker(kind: str, opts: dict[str, Any]) -> Any:
    # Imported by type: a configuration with TCP checks never imports ssl or grpc.
    if kind == "tcp":
        from healthchecks.checkers.tcp import TcpCheck

        return TcpCheck()
    if kind in ("http", "https"):
        from healthchecks.checkers.http import HttpCheck

        o = dict(opts)
        if "status" in o:
            o["expect_status"] = tuple(o.pop("status"))
        return HttpCheck(tls=kind == "https", **o)
    if kind == "tls":
        from healthchecks.checkers.tls import TlsCheck

        return TlsCheck(**opts)
    if kind == "dns":
        from healthchecks.checkers.dns import DnsCheck

        o = dict(opts)
        if "answer" in o:
            o["answer"] = frozenset(o["answer"])
        return DnsCheck(**o)
    if kind == "udp":
        from healthchecks.checkers.udp import UdpCheck

        regex = opts.get("expect_regex")
        return UdpCheck(
            payload=_bytes(opts, "payload", "payload_hex") or b"",
            expect=_bytes(opts, "expect", "expect_hex"),
            expect_regex=regex.encode() if regex is not None else None,
            require_reply=opts.get("require_reply"),
        )
    if kind == "icmp":
        from healthchecks.checkers.icmp import IcmpCheck

        return IcmpCheck(**opts)
    if kind == "smtp":
        from healthchecks.checkers.smtp import SmtpCheck
        from healthchecks.result import Target

        o = dict(opts)
        o["also"] = tuple(Target(h["address"], h.get("port", 0), h.get("source")) for h in o.get("also", ()))
        return SmtpCheck(**o)
    if kind == "grpc":
        from healthchecks.checkers.grpc import GrpcCheck

        return GrpcCheck(**opts)
    if kind == "script":
        from healthchecks.checkers.script import ScriptCheck

        o = dict(opts)
        o["argv"] = tuple(o["argv"])
        return ScriptCheck(**o)
    if kind == "file":
        from healthchecks.checkers.file import FileCheck

        return FileCheck(**opts)
    raise ValueError(f"unknown check type {kind!r}")


def build_check(
    raw: dict[str, Any],
    error: Callable[[tuple[str, ...], str], None],
    unknown: Collection[str] = frozenset(),
) -> HealthCheck | None:
    """The HealthCheck for a merged section, or None after reporting through `error(subpath, message)`.

    `unknown` names the keys whose values the schema refused: the rules that would read
    them (their defaults in their place) are not applied, and no check is built.
    """
    kind = raw.get("type")
    if "type" in unknown:
        kind = None
    elif kind is None:
        error((), "a health_check needs `type` (set it here or on the virtual server's health_check)")
        return None
    block = BLOCK[kind] if kind is not None else None
    ok = kind is not None and not (block is not None and block in unknown)
    if kind is not None:
        for other in sorted(BLOCKS - {block} if block else BLOCKS):
            if other in raw:
                error((other,), f"`{other}` options do not apply to a {kind} check")
                ok = False
        if kind in REQUIRED_BLOCK and block not in raw and block not in unknown:
            needed = {"dns": "name", "script": "argv", "file": "path"}[kind]
            error(("type",), f"a {kind} check needs a `{block}:` block (with {needed} at least)")
            ok = False
    interval = parse_duration(raw.get("interval", 2))
    timeout = parse_duration(raw.get("timeout", 1))
    if "interval" in unknown or "timeout" in unknown:
        ok = False
    elif interval <= 0 or timeout <= 0:
        error(("interval" if interval <= 0 else "timeout",), "interval and timeout must be above 0")
        ok = False
    elif timeout > interval:
        error(("timeout",), f"timeout {timeout:g}s is longer than the interval {interval:g}s")
        ok = False
    if not ok or kind is None:
        return None
    try:
        checker = _make_checker(kind, dict(raw.get(block, {})) if block else {})
    except (ValueError, TypeError) as e:
        error((block,) if block else ("type",), f"invalid {kind} check options: {e}")
        return None
    except MissingPackage as e:
        error(("type",), str(e))
        return None
    except ImportError as e:
        error(("type",), f"{kind} checks need a package that is not installed: {e}")
        return None
    return HealthCheck(
        type=kind,
        checker=checker,
        interval=interval,
        timeout=timeout,
        rise=int(raw.get("rise", 2)),
        fall=int(raw.get("fall", 3)),
        jitter=float(raw.get("jitter", 0.1)),
        retries=int(raw.get("retries", 0)),
        retry_delay=parse_duration(raw.get("retry_delay", "100ms")),
        address=raw.get("address"),
        port=int(raw["port"]) if "port" in raw else None,
        source=raw.get("source"),
        on_failure=raw.get("on_failure", "inhibit"),
        start_up=raw.get("start", "down") == "up",
    )
