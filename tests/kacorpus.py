"""The keepalived corpus as the equivalence tests run it: our files and Debian's samples, with
their private addresses mapped into 198.18.0.0/15 (the only range tests may use) so that
keepalived and ipvsmgr can both be run on them, and optionally with check timings cut to
seconds. Both daemons always get the same rewritten file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "keepalived"
SAMPLES = Path("/usr/share/doc/keepalived/samples")
CONFIG_ID = "lb1"

_V4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# check timings above 1 s (delay_loop 6, connect_timeout 3, ...) made 1 s: the outcome of a check
# does not depend on them, and a corpus run stays within minutes
_TIMING = re.compile(
    r"(?m)^(\s*(?:delay_loop|connect_timeout|delay_before_retry|warmup|misc_timeout)\s+)(\d+(?:\.\d+)?)"
)
_DIGEST = re.compile(r"(?m)^(\s*digest\s+)[0-9A-Fa-f]{32}\b")
PAGE = b"ipvsmgr equivalence test page\n"  # what the test's HTTP reals serve


def to_test_range(text: str) -> str:
    """192.168.x.y -> 198.18.x.y, 10.a.b.c -> 198.19.b.c and 172.16-31.c.d -> 198.19.128+c.d;
    other addresses (127/8, 0/8, 198.18/15, IPv6 documentation and link-local, and the few
    public ones a sample names, unreachable from the VM) stay as they are."""

    def one(m: re.Match[str]) -> str:
        a, b, c, d = m.groups()
        if (a, b) == ("192", "168"):
            return f"198.18.{c}.{d}"
        if a == "10":
            return f"198.19.{c}.{d}"
        if a == "172" and 16 <= int(b) <= 31:
            return f"198.19.{128 + int(c) % 128}.{d}"
        return m.group(0)

    return _V4.sub(one, text)


def fast_checks(text: str) -> str:
    """Check timings over 1 s made 1 s, and every HTTP digest the MD5 of the test's page (the
    samples' digests are of pages nobody serves)."""

    def one(m: re.Match[str]) -> str:
        return m.group(1) + ("1" if float(m.group(2)) > 1 else m.group(2))

    digest = hashlib.md5(PAGE).hexdigest()  # keepalived's digest is MD5
    return _DIGEST.sub(lambda m: m.group(1) + digest, _TIMING.sub(one, text))


def copy_rewritten(path: Path, into: Path, *, fast: bool = False, drop: str | None = None) -> Path:
    """The file (and, for ours, the conf.d it includes) rewritten as above, under `into`.
    drop: a regex of whole lines to leave out."""
    for src in [path, *(sorted((DATA / "conf.d").glob("*.conf")) if path.parent == DATA else [])]:
        dst = into / src.relative_to(path.parent)
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = to_test_range(src.read_text(errors="replace"))
        if fast:
            text = fast_checks(text)
        if drop is not None:
            text = re.sub(rf"(?m)^\s*(?:{drop}).*$", "", text)
        dst.write_text(text)
    return into / path.name
