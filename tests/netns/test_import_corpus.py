"""`ipvsmgr import keepalived` against keepalived's own verdict on a corpus.

The corpus is the configurations in tests/data/keepalived/ and the sample
configurations Debian's keepalived package ships. For each one,
`keepalived -t` (2.2.7) runs in a namespace holding every interface the file
names, and the import must agree with it: a file keepalived refuses is
refused, at the lines keepalived names; a file it accepts imports, and the
result passes `ipvsmgr check`.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsmgr.migrate import command, kaconf
from tests.netns.vrrplab import keepalived

OURS = sorted((Path(__file__).parents[1] / "data" / "keepalived").glob("*.conf"))
SAMPLES_DIR = Path("/usr/share/doc/keepalived/samples")
SAMPLES = sorted(SAMPLES_DIR.glob("keepalived.conf.*"))
CONFIG_ID = "lb1"
# keepalived -t messages about the machine, not the file
_MACHINE = re.compile(r"doesn't exist|Non-existent interface|Unknown interface|not found/accessible")
_LINE = re.compile(r"\((?P<file>[^:()]+): Line (?P<line>\d+)\) (?P<message>.*)")

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


def interfaces(path: Path) -> set[str]:
    """Every interface name the file uses, so keepalived -t finds them all."""
    names: set[str] = set()

    def walk(node: kaconf.Node, parent: str) -> None:
        words = node.args
        if node.name in ("interface", "lvs_sync_daemon_interface") and words:
            names.add(words[0])
        if node.name == "lvs_sync_daemon" and words:
            names.add(words[0])
        if parent == "track_interface":
            names.add(node.name)
        for i, w in enumerate(words[:-1]):
            if w == "dev":
                names.add(words[i + 1])
        for child in node.children or []:
            walk(child, node.name)

    walk(kaconf.parse(str(path), CONFIG_ID).root, "")
    return {n for n in names if re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", n) and ":" not in n}


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ka-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def keepalived_verdict(path: Path, ns: str) -> tuple[bool, set[int], str]:
    """(accepted, lines of its complaints about the file, its output) from keepalived -t."""
    for i, name in enumerate(sorted(interfaces(path))):
        link = ["ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"kp{i}"]
        subprocess.run(link, check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", name, "up"], check=True)
    run = subprocess.run(
        ["ip", "netns", "exec", ns, str(keepalived()), "-t", "-i", CONFIG_ID, "-f", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = run.stdout + run.stderr
    # 5: a configuration error; 6: scripts without script security
    assert run.returncode in (0, 5, 6), f"keepalived -t crashed ({run.returncode}):\n{out}"
    lines = {
        int(m["line"])
        for m in map(_LINE.match, out.splitlines())
        if m and Path(m["file"]).name == path.name and not _MACHINE.search(m["message"])
    }
    return run.returncode == 0, lines, out


def test_the_corpus_has_ours_and_keepalived_samples() -> None:
    assert len(OURS) >= 20
    assert len(SAMPLES) >= 20, f"keepalived's samples are missing from {SAMPLES_DIR}"


@pytest.mark.parametrize("path", OURS + SAMPLES, ids=lambda p: p.name)
def test_import_agrees_with_keepalived_t(path: Path, netns: str) -> None:
    accepted, ka_lines, out = keepalived_verdict(path, netns)
    outcome = command.import_keepalived(str(path), CONFIG_ID)
    errors = [f for f in outcome.findings if f.kind == "error"]
    report = "\n".join(map(str, outcome.findings)) + "\n" + "\n".join(outcome.problems)
    if accepted:
        assert not errors, f"keepalived -t accepts {path.name}; the import refused it:\n{report}"
        assert outcome.status in (0, 1) and not outcome.problems, report
        assert outcome.text
    else:
        assert errors, f"keepalived -t refuses {path.name}:\n{out}\nthe import accepted it:\n{report}"
        ours = {f.pos.line for f in errors if Path(f.pos.file).name == path.name}
        said = f"keepalived names lines {sorted(ka_lines)}, the import {sorted(ours)}:\n{out}"
        assert ka_lines <= ours, said
        assert outcome.status == 2 and outcome.text == ""
