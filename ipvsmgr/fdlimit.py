"""The daemon's open-files limit, and the share of it health checks may use.

systemd starts services with a soft limit of 1,024 open files. A check holds
a socket for as long as it waits, so a rack of silent reals (SYNs dropped)
holds one per check in flight for the whole timeout: 3,000 of them at the
default timings needed more than 1,024 and took healthy checks down with
EMFILE. The daemon raises its soft limit to the hard one (the unit sets
LimitNOFILE), raises the hard one too if it may and the configuration needs
more, and gives the checks a budget of what is left after a reserve for
everything else (the control socket and metrics connections, netlink,
VRRP, ExaBGP, the log): the scheduler shares that budget among the check
types, and a check that still finds no descriptor is "not run", neither
up nor down.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger("ipvsmgr.fd")

RESERVE = 512  # descriptors for everything but the checks
SCRIPT_FDS = 3  # a script run: two pipes' read ends and a pidfd or child watcher


@dataclass(frozen=True, slots=True)
class FdLimit:
    soft: int
    hard: int
    need: int
    before: int  # the soft limit found at start

    @property
    def budget(self) -> int:
        """Check runs in flight at once."""
        return max(64, self.soft - RESERVE)


def needed(checks: int, scripts: int = 0) -> int:
    """Descriptors a configuration with `checks` checks (`scripts` of them scripts) may hold."""
    return RESERVE + checks + (SCRIPT_FDS - 1) * scripts


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def raise_for(need: int) -> FdLimit:
    """Raise the soft limit to the hard one, and the hard one to `need` when it
    is lower and the process may (CAP_SYS_RESOURCE); log what was done."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard != resource.RLIM_INFINITY and hard < need:
        want = min(max(need, 2 * hard), _nr_open())
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft = hard = want
        except (OSError, ValueError):
            pass
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    limit = FdLimit(int(soft), int(hard), need, int(before))
    if limit.soft < need:
        log.warning(
            "open files limit %d is below the %d this configuration may hold: health checks get %d "
            "at once and the rest are not run (raise LimitNOFILE)",
            limit.soft, need, limit.budget,
        )  # fmt: skip
    elif limit.soft != before:
        log.info("open files limit raised from %d to %d (the configuration may hold %d)", before, soft, need)
    return limit


def open_fds() -> int:
    """Descriptors this process holds now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir held
    except OSError:
        return 0
