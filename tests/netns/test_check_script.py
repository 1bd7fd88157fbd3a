"""Script checker: exit status verdicts, timeouts that kill the whole process
group, capped output, running as an unprivileged user. No network: the
scripts are written into tmp_path (or a world-readable temporary directory
for the `nobody` test) and removed with it."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthchecks.checkers.script import ScriptCheck, ScriptRun, first_line
from healthchecks.result import Result, Target

TARGET = Target("198.51.100.7", 8080)


def script(path: Path, body: str, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


def check(c: ScriptCheck, timeout: float = 5.0, target: Target = TARGET) -> Result:
    return asyncio.run(c.check(target, timeout))


def run(c: ScriptCheck, timeout: float = 5.0) -> ScriptRun:
    return asyncio.run(c.run(TARGET, timeout))


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie may wait a
    while for a reaper that is not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], within: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def read_pids(path: Path, count: int, within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.01)
    raise AssertionError(f"the script did not write {count} pids to {path}")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_exit_0_is_up_and_the_target_is_exported(tmp_path: Path) -> None:
    prog = script(
        tmp_path / "ok.sh",
        '[ "$IPVSMGR_REAL_ADDRESS" = 198.51.100.7 ] || { echo "addr $IPVSMGR_REAL_ADDRESS" >&2; exit 1; }\n'
        '[ "$IPVSMGR_REAL_PORT" = 8080 ] || { echo "port $IPVSMGR_REAL_PORT" >&2; exit 1; }\n'
        '[ "$EXTRA" = "x y" ] || { echo "extra $EXTRA" >&2; exit 1; }\n'
        '[ "$1" = "--flag" ] || { echo "argv $1" >&2; exit 1; }\n'
        "exit 0\n",
    )
    result = check(ScriptCheck([prog, "--flag"], env={"EXTRA": "x y"}))
    assert result.ok, result.reason
    assert result.weight is None
    assert result.duration > 0


def test_exit_1_is_down_with_the_first_line_of_stderr(tmp_path: Path) -> None:
    prog = script(
        tmp_path / "down.sh", "echo out-line\necho '  backend says no  ' >&2\necho more >&2\nexit 1\n"
    )
    result = check(ScriptCheck([prog]))
    assert (result.ok, result.reason, result.weight) == (False, "script exit 1: backend says no", None)


def test_exit_1_falls_back_to_stdout_and_trims_to_120_chars(tmp_path: Path) -> None:
    prog = script(tmp_path / "down.sh", f"echo\necho {'x' * 300}\nexit 1\n")
    assert check(ScriptCheck([prog])).reason == "script exit 1: " + "x" * 120
    silent = script(tmp_path / "silent.sh", "exit 1\n")
    assert check(ScriptCheck([silent])).reason == "script exit 1"


@pytest.mark.parametrize(("status", "weight"), [(2, 0), (5, 3), (255, 253)])
def test_exit_2_to_255_is_up_with_dynamic_weight(tmp_path: Path, status: int, weight: int) -> None:
    prog = script(tmp_path / "w.sh", f"exit {status}\n")
    result = check(ScriptCheck([prog]))
    assert (result.ok, result.weight, result.reason) == (True, weight, "")


def test_killed_by_a_signal_is_down(tmp_path: Path) -> None:
    prog = script(tmp_path / "sig.sh", "kill -TERM $$\nsleep 5\n")
    assert check(ScriptCheck([prog])).reason == "script killed by signal 15"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path / "hang.sh", f"echo $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nsleep 60\n")
    start = time.monotonic()
    result = check(ScriptCheck([prog]), timeout=1.0)
    elapsed = time.monotonic() - start
    assert result.reason == "script timed out after 1s"
    assert not result.ok
    assert 1.0 <= elapsed < 2.0
    found = read_pids(pids, 2)
    assert wait_gone(found) == [], "the script or its background child survived the timeout"


def test_cancelling_the_check_kills_the_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path / "hang.sh", f"sleep 60 &\necho $! > {pids}\nsleep 60\n")

    async def body() -> None:
        task = asyncio.create_task(ScriptCheck([prog]).check(TARGET, 30.0))
        await asyncio.to_thread(read_pids, pids, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(body(), 10))
    assert wait_gone(read_pids(pids, 1)) == []


def test_background_leftovers_are_killed_after_a_normal_exit(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prog = script(tmp_path / "bg.sh", f"sleep 60 &\necho $! > {pids}\nexit 0\n")
    assert check(ScriptCheck([prog])).ok
    assert wait_gone(read_pids(pids, 1)) == []


def test_a_flood_on_stdout_is_capped_and_does_not_delay_the_verdict(tmp_path: Path) -> None:
    # `yes` keeps the pipe open and flooding after the script exits: the verdict
    # comes at the exit, what is kept is 4 KiB, and `yes` is killed with the group.
    pids = tmp_path / "pids"
    prog = script(tmp_path / "flood.sh", f"yes &\necho $! > {pids}\nyes >&2 &\nsleep 1\nexit 4\n")
    before = rss_kib()
    start = time.monotonic()
    result = run(ScriptCheck([prog]), timeout=10.0)
    elapsed = time.monotonic() - start
    assert result.returncode == 4
    assert not result.timed_out
    assert 1.0 <= elapsed < 2.0
    assert result.stdout == b"y\n" * 2048
    assert result.stderr == b"y\n" * 2048
    assert rss_kib() - before < 32 * 1024
    assert wait_gone(read_pids(pids, 1)) == []


def test_a_script_that_writes_a_lot_then_exits_is_not_held_up(tmp_path: Path) -> None:
    # 64 MiB written by the script itself, which then exits 3 (up, weight 1): the
    # drain keeps up well enough that the verdict comes in bounded time.
    prog = script(tmp_path / "big.sh", "head -c 67108864 /dev/zero\necho done >&2\nexit 3\n")
    c = ScriptCheck([prog], output_limit=100)
    start = time.monotonic()
    result = run(c, timeout=10.0)
    elapsed = time.monotonic() - start
    assert (result.returncode, result.timed_out) == (3, False)
    assert result.stdout == b"\0" * 100
    assert result.stderr == b"done\n"
    assert elapsed < 5.0


def test_a_flood_that_outlives_the_timeout_still_times_out(tmp_path: Path) -> None:
    prog = script(tmp_path / "flood.sh", "exec yes\n")
    start = time.monotonic()
    result = check(ScriptCheck([prog]), timeout=0.5)
    assert result.reason == "script timed out after 0.5s"
    assert time.monotonic() - start < 1.5


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can read and write (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="ipvsmgr-script-test-"))
    try:
        d.chmod(0o777)
        yield d
    finally:
        shutil.rmtree(d)


def test_runs_as_an_unprivileged_user(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    nobody = pwd.getpwnam("nobody")
    out = shared_dir / "id"
    prog = script(shared_dir / "whoami.sh", f'id -u > {out}\nid -g >> {out}\necho "$HOME" >> {out}\nexit 0\n')
    assert check(ScriptCheck([prog], user="nobody")).ok
    uid, gid, home = out.read_text().split("\n")[:3]
    assert (int(uid), int(gid), home) == (nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
    assert out.stat().st_uid == nobody.pw_uid


def test_an_unknown_user_is_down() -> None:
    result = check(ScriptCheck(["/bin/true"], user="no-such-user-ipvsmgr"))
    assert result.reason == "script user not found: no-such-user-ipvsmgr"


def test_a_missing_or_non_executable_script_is_down(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.sh")
    assert check(ScriptCheck([missing])).reason == f"script not found: {missing}"
    assert (
        check(ScriptCheck(["no-such-program-ipvsmgr"])).reason == "script not found: no-such-program-ipvsmgr"
    )
    plain = script(tmp_path / "plain.sh", "exit 0\n", mode=0o644)
    if os.geteuid() == 0:
        # root may execute any file with an x bit, never one without.
        assert not os.stat(plain).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    assert check(ScriptCheck([plain])).reason == f"script not executable: {plain}"
    noshell = tmp_path / "interp.sh"
    noshell.write_text("#!/no/such/interpreter\nexit 0\n")
    noshell.chmod(0o755)
    assert check(ScriptCheck([str(noshell)])).reason == f"script interpreter not found: {noshell}"


def test_argv_must_be_a_list_not_a_shell_string() -> None:
    with pytest.raises(TypeError):
        ScriptCheck("echo hi; exit 0")
    with pytest.raises(ValueError):
        ScriptCheck([])
    c = ScriptCheck(["/bin/true", "a"])
    assert c.argv == ("/bin/true", "a")
    assert c == ScriptCheck(("/bin/true", "a"))
    assert hash(c) == hash(ScriptCheck(["/bin/true", "a"]))


def test_first_line() -> None:
    assert first_line(b"\n \n  hello world \nnext") == "hello world"
    assert first_line(b"\xff\xfe bad") == "\ufffd\ufffd bad"
    assert first_line(b"") == ""


def test_no_descriptors_leak(tmp_path: Path) -> None:
    ok = script(tmp_path / "ok.sh", "echo hi\nexit 0\n")
    hang = script(tmp_path / "hang.sh", "sleep 60\n")

    async def body() -> None:
        for _ in range(10):
            await ScriptCheck([ok]).check(TARGET, 5.0)
            await ScriptCheck([str(tmp_path / "missing")]).check(TARGET, 5.0)
            with pytest.raises(ValueError):  # an argv that cannot be exec'd at all
                await ScriptCheck([ok, "nul\0byte"]).check(TARGET, 5.0)
        await ScriptCheck([hang]).check(TARGET, 0.1)

    before = len(os.listdir("/proc/self/fd"))
    asyncio.run(body())
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_cancelled_run_reaps_its_process_before_the_loop_goes(tmp_path: Path) -> None:
    # Cancelling a check (a scheduler closing) must not leave the subprocess
    # transport for the garbage collector: a loop closed right after the
    # cancellation would never close it (ResourceWarning: unclosed transport).
    import gc
    import warnings

    c = ScriptCheck([script(tmp_path / "slow.sh", "sleep 30\n")])

    async def cancel_midway() -> None:
        task = asyncio.get_running_loop().create_task(c.check(TARGET, 10.0))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.monotonic()
        loop = asyncio.new_event_loop()  # closed at once, without asyncio.run's clean-up
        loop.run_until_complete(cancel_midway())
        loop.close()
        gc.collect()
    assert time.monotonic() - start < 5
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [
        str(w.message) for w in caught
    ]
