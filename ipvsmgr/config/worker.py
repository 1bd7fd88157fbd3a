"""Load a configuration in a process of its own, within a time and memory budget.

The daemon reloads through this: parsing and validating a 10,000 x 10 file
takes seconds and hundreds of MB, and a hostile file (aliases that expand,
deep nesting) can take far more. In a worker the daemon's loop keeps
running, its memory does not grow with the file, and a file over budget is
refused with a clear problem instead of stalling or swelling the daemon.

`python -m ipvsmgr.config.worker PATH MEMORY_BYTES CPU_SECONDS` writes one pickle on
stdout: ("ok", Config) or ("problems", [Problem, ...]).
"""

from __future__ import annotations

import gc
import os
import pickle
import resource
import subprocess
import sys

from ipvsmgr.config import Config, ConfigError, Problem, load

LOAD_TIMEOUT = 120.0  # seconds: a valid 10,000 x 10 file takes ~3 s on a host, ~30 s in a TCG VM
LOAD_MEMORY = 2 << 30  # bytes of address space (RLIMIT_AS) the load may add to the worker's
MAX_PROBLEMS = 1000  # sent back to the daemon (which logs fewer), with the total
OUT_OF_MEMORY = 3  # the worker's exit status when even reporting the problem ran out of memory


def load_isolated(path: str, timeout: float = LOAD_TIMEOUT, memory: int = LOAD_MEMORY) -> Config:
    """load(path) in a worker process; ConfigError for an invalid file or one over budget."""
    argv = [sys.executable, "-m", "ipvsmgr.config.worker", path, str(memory), str(max(1, round(timeout)))]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError([Problem(path, 1, 1, f"loading took longer than {timeout:g}s; refused")]) from None
    except OSError as e:
        raise ConfigError([Problem(path, 1, 1, f"cannot start the configuration loader: {e}")]) from None
    try:
        kind, value = pickle.loads(proc.stdout)  # our own worker's output
    except Exception:  # killed, or died before answering
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1][:200] if err else f"exit status {proc.returncode}"
        if proc.returncode == OUT_OF_MEMORY or "MemoryError" in why:
            why = f"loading needs more memory than the loader's budget ({memory >> 20} MB): {why}; refused"
        elif proc.returncode < 0:
            why = f"the loader was killed by signal {-proc.returncode} (OOM killer or operator); refused"
        raise ConfigError([Problem(path, 1, 1, f"the configuration loader failed: {why}")]) from None
    if kind == "ok" and isinstance(value, Config):
        return value
    problems, total = value
    raise ConfigError(list(problems), total=total)


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    path, memory = sys.argv[1], int(sys.argv[2])
    # Behind VRRP and the daemon for the CPU: a big load must not take their turn
    # on a busy node (lowering our own priority needs no capability).
    os.nice(10)
    # The budget is what loading may add to the interpreter and its imports.
    limit = _address_space() + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # If the daemon dies mid-load nobody enforces its timeout: CPU time ends us instead.
    cpu = int(float(sys.argv[3])) if len(sys.argv) > 3 else int(LOAD_TIMEOUT)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    gc.disable()  # hundreds of thousands of objects, no cycles: the collector would only rescan them
    try:
        result: tuple[str, object] = ("ok", load(path))
    except ConfigError as e:
        result = ("problems", (e.problems[:MAX_PROBLEMS], len(e.problems)))  # the daemon shows a few
    except (MemoryError, RecursionError) as e:
        what = "memory" if isinstance(e, MemoryError) else "nesting depth"
        problem = Problem(path, 1, 1, f"loading needs more {what} than the loader's budget allows; refused")
        result = ("problems", ([problem], 1))
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.flush()
    os._exit(0)  # skip freeing the parse, object by object


if __name__ == "__main__":
    try:
        main()
    except MemoryError:  # out of memory while reporting it
        os._exit(OUT_OF_MEMORY)
