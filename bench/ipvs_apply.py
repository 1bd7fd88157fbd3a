"""Benchmark: ipvsmgr against ipvsadm on the same rules, in one VM boot.

    python -m bench.ipvs_apply [--services 1000] [--reals 10] [--big 10000]

On the host this boots a virtme-ng VM with Debian's kernel and re-runs itself
inside (IPVS is not in the host kernel). Inside, every step is a fresh
process, timed with its peak RSS (wait4), so both tools pay their start-up:

  apply     ipvsmgr apply of N x M on an empty table   vs  ipvsadm -R
  dump      a process dumping the table (64-bit stats)  vs  ipvsadm -Sn
  plan      ipvsmgr plan on the unchanged table         vs  ipvsadm -Sn
  one real  ipvsmgr apply after one weight changed      vs  ipvsadm -e (and -C + -R)
  rss       peak RSS of ipvsmgr apply at --big x M

Ratios are ipvsmgr / ipvsadm (lower is better); the targets are printed next
to them. Machines are shared and noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen import config, real, real_port, rules, vip  # noqa: E402

PY = sys.executable


def run(
    argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """Run a child; return (seconds, peak RSS in MiB, stdout). Fails loudly on error."""
    fin = os.open(stdin, os.O_RDONLY) if stdin else os.open(os.devnull, os.O_RDONLY)
    out_r, out_w = os.pipe()
    err_file = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the child as fd 2
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.dup2(fin, 0)
        os.dup2(out_w, 1)
        os.dup2(err_file.fileno(), 2)
        os.execvpe(argv[0], argv, env or os.environ)
    os.close(out_w)
    os.close(fin)
    chunks = []
    while True:
        b = os.read(out_r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(out_r)
    _, status, usage = os.wait4(pid, 0)
    took = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    out = b"".join(chunks).decode()
    if code not in (0, 2):
        err_file.seek(0)
        raise SystemExit(f"{' '.join(argv)} exited {code}:\n{err_file.read().decode()[-3000:]}")
    return took, usage.ru_maxrss / 1024, out


def ipvsadm_rules() -> list[str]:
    return sorted(
        subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout.splitlines()
    )


DUMP = (
    "from ipvsmgr.ipvs.client import IPVSClient\n"
    "t = IPVSClient().table()\n"
    "print(len(t.services), sum(len(d) for d in t.dests.values()))\n"
)


def inside(services: int, reals: int, big: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="ipvsmgr-bench-"))
    cfg, rules_file = work / "lb.yaml", work / "lb.rules"
    cfg.write_text(config(services, reals))
    rules_file.write_text(rules(services, reals))
    env = dict(os.environ, IPVSMGR_STATE_DIR=str(work / "state"), PYTHONPATH=str(ROOT))
    ipvsmgr = [PY, "-m", "ipvsmgr"]
    r: dict[str, object] = {"services": services, "reals": reals}

    subprocess.run(["ipvsadm", "-C"], check=True)
    r["ipvsadm_restore_s"], r["ipvsadm_restore_rss_mib"], _ = run(["ipvsadm", "-R"], stdin=str(rules_file))
    want = ipvsadm_rules()
    r["ipvsadm_save_s"], _, _ = run(["sh", "-c", "ipvsadm -Sn > /dev/null"])
    r["ipvsadm_list_s"], _, _ = run(["sh", "-c", "ipvsadm -Ln --stats --exact > /dev/null"])

    subprocess.run(["ipvsadm", "-C"], check=True)
    r["apply_s"], r["apply_rss_mib"], out = run([*ipvsmgr, "apply", "-q", "-c", str(cfg)], env=env)
    r["apply_writes"] = int(out.split("(")[-1].split()[0])
    assert ipvsadm_rules() == want, "ipvsmgr apply did not produce the ipvsadm -R rules"

    r["dump_s"], r["dump_rss_mib"], out = run([PY, "-c", DUMP], env=env)
    assert out.split() == [str(services), str(services * reals)], out
    r["plan_s"], r["plan_rss_mib"], out = run([*ipvsmgr, "plan", "-c", str(cfg)], env=env)
    assert "No changes" in out, out[:2000]

    # one real's weight changes
    changed = work / "changed.yaml"
    changed.write_text(config(services, reals, {(services // 2, reals // 2): 7}))
    r["one_real_s"], _, out = run([*ipvsmgr, "apply", "--json", "-c", str(changed)], env=env)
    r["one_real_writes"] = json.loads(out)["writes"]
    n = (services // 2) * reals + reals // 2
    edit = [
        "ipvsadm",
        "-e",
        "-t",
        f"{vip(services // 2)}:80",
        "-r",
        f"{real(n)}:{real_port(n)}",
        "-m",
        "-w",
        "9",
    ]
    r["ipvsadm_edit_s"], _, _ = run(edit)
    restore = f"ipvsadm -C && ipvsadm -R < {shlex.quote(str(rules_file))}"
    r["ipvsadm_clear_restore_s"], _, _ = run(["sh", "-c", restore])

    if big:
        subprocess.run(["ipvsadm", "-C"], check=True)
        big_cfg = work / "big.yaml"
        big_cfg.write_text(config(big, reals))
        env_big = dict(env, IPVSMGR_STATE_DIR=str(work / "state-big"))
        r["big_services"] = big
        r["big_apply_s"], r["big_apply_rss_mib"], out = run(
            [*ipvsmgr, "apply", "--json", "-c", str(big_cfg)], env=env_big
        )
        r["big_plan_s"], r["big_plan_rss_mib"], out = run(
            [*ipvsmgr, "plan", "--json", "-c", str(big_cfg)], env=env_big
        )
        assert json.loads(out)["changes"] == 0
        subprocess.run(["ipvsadm", "-C"], check=True)
    return r


def report(r: dict[str, object]) -> str:
    def f(k: str) -> float:
        return float(r[k])  # type: ignore[arg-type]

    rows = [
        ("full apply / ipvsadm -R", f("apply_s") / f("ipvsadm_restore_s"), "<= 0.2"),
        ("dump / ipvsadm -Sn", f("dump_s") / f("ipvsadm_save_s"), "<= 1.0"),
        ("plan (unchanged) / ipvsadm -Sn", f("plan_s") / f("ipvsadm_save_s"), "<= 1.0"),
        ("one-real apply / ipvsadm -e", f("one_real_s") / f("ipvsadm_edit_s"), "(info)"),
        ("one-real apply / ipvsadm -C + -R", f("one_real_s") / f("ipvsadm_clear_restore_s"), "(info)"),
    ]
    lines = [f"{r['services']} services x {r['reals']} reals"]
    for k in sorted(r):
        if k.endswith("_s"):
            lines.append(f"  {k:28s} {f(k):8.2f} s")
    for k in sorted(r):
        if k.endswith("_mib") or k.endswith("_writes"):
            lines.append(f"  {k:28s} {r[k]}")
    lines.append("ratios (ipvsmgr / ipvsadm, lower is better):")
    for name, ratio, target in rows:
        lines.append(f"  {name:34s} {ratio:6.2f}x   target {target}")
    lines.append(f"  one-real change writes              {r['one_real_writes']}   target exactly 1")
    if "big_apply_rss_mib" in r:
        rss = f("big_apply_rss_mib")
        lines.append(
            f"  peak RSS, apply {r['big_services']} x {r['reals']}       {rss:6.1f} MiB  target <= 100"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("--big", type=int, default=10000, help="services for the RSS run (0: skip)")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    if os.environ.get("IPVSMGR_IN_VM") == "1":
        r = inside(args.services, args.reals, args.big)
        print(json.dumps(r))
        return
    from bench.vmrun import run_module_in_vm

    argv = ["--services", str(args.services), "--reals", str(args.reals), "--big", str(args.big)]
    r = run_module_in_vm("bench.ipvs_apply", argv, timeout=3600)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
