"""tests/kernel: run inside a VM booted from Debian's kernel, one boot per session.

On the host, collecting these tests boots the VM once, runs the same tests
inside it, and reports each test with the outcome it had inside. Inside the
VM (IPVSMGR_IN_VM=1) the tests simply run against the real IPVS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests import vm

IN_VM = os.environ.get(vm.IN_VM_ENV) == "1"
_reports: dict[str, dict[str, str]] = {}


def _outside_results(config: pytest.Config, items: list[pytest.Item]) -> dict[str, dict[str, str]]:
    cache = getattr(config, "_ipvsmgr_vm", None)
    if cache is None:
        why = vm.why_no_vm()
        if why:
            cache = {"__skip__": {"outcome": "skipped", "text": f"VM suite not run: {why}"}}
        else:
            ids = [item.nodeid for item in items]
            _prepare_host(ids)
            data, console, took = vm.run_pytest_in_vm(ids)
            print(f"\n[VM suite: {took:.0f}s]\n{console[-6000:]}")
            running = data.pop("__running__", None)
            if running:
                # killed at the time limit: what finished keeps its outcome
                data["__unfinished__"] = {
                    "outcome": "failed",
                    "text": f"the VM suite was killed after {took:.0f}s while running {running['text']}",
                }
            cache = data or {"__error__": {"outcome": "failed", "text": console[-8000:]}}
        config._ipvsmgr_vm = cache  # type: ignore[attr-defined]
    return cache  # type: ignore[no-any-return]


def _prepare_host(ids: list[str]) -> None:
    """What VM tests need made on the host first (the VM sees the host's files):
    a Debian 12 root with the package installed, for the test_package_* files."""
    if any("tests/kernel/test_package_" in i for i in ids):
        from tests.package import debroot

        if debroot.tools_missing() is None:
            debroot.make_root("bookworm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel/" in item.nodeid:
            item.add_marker(pytest.mark.kernel)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if IN_VM or "tests/kernel/" not in pyfuncitem.nodeid:
        return None
    kernel_items = [i for i in pyfuncitem.session.items if "tests/kernel/" in i.nodeid]
    results = _outside_results(pyfuncitem.config, kernel_items)
    if "__skip__" in results:
        pytest.skip(results["__skip__"]["text"])
    if "__error__" in results:
        pytest.fail("the VM suite produced no results:\n" + results["__error__"]["text"], pytrace=False)
    report = results.get(pyfuncitem.nodeid)
    if report is None:
        why = results.get("__unfinished__", {}).get("text", "")
        pytest.fail("this test did not run inside the VM" + (f": {why}" if why else ""), pytrace=False)
    if report["outcome"] == "skipped":
        pytest.skip(report["text"])
    if report["outcome"] != "passed":
        pytest.fail(f"failed inside the VM:\n{report['text']}", pytrace=False)
    return True  # handled: the body ran inside the VM


@pytest.fixture
def ipvs(tmp_path: Any) -> Iterator[Any]:
    """A clean IPVS table and state directory; on the host (outside the VM) nothing."""
    if not IN_VM:
        yield None
        return
    from tests.kernel import helpers

    helpers.ipvsadm("-C")
    yield helpers.Lab(state_dir=str(tmp_path / "state"), work=tmp_path)
    helpers.ipvsadm("-C")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not IN_VM:
        return
    prev = _reports.get(report.nodeid)
    keep_failure = prev is not None and prev["outcome"] == "failed"
    spent = report.duration + (float(prev["took"]) if prev is not None and prev["took"] else 0.0)
    if (report.when == "call" or report.outcome != "passed" or prev is None) and not keep_failure:
        text = str(report.longrepr) if report.longrepr else ""
        if report.skipped and isinstance(report.longrepr, tuple):
            text = str(report.longrepr[2])
        _reports[report.nodeid] = {
            "outcome": report.outcome,
            "text": text[-8000:],
            "when": report.when or "",
            "took": "",
        }
    _reports[report.nodeid]["took"] = f"{spent:.1f}"  # setup, call and teardown: what the budget pays
    if report.when == "teardown":
        _reports.pop("__running__", None)
    _save_reports()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    # Results go out after every test, not at the end: a suite killed at its
    # time limit still reports everything that finished, and names the test
    # that was running.
    if IN_VM:
        _reports["__running__"] = {"outcome": "running", "text": nodeid, "when": "", "took": ""}
        _save_reports()


def _save_reports() -> None:
    path = os.environ.get(vm.RESULTS_ENV)
    if not path:
        return
    with open(path + ".tmp", "w") as f:
        json.dump(_reports, f)
    os.replace(path + ".tmp", path)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: Any, config: pytest.Config) -> None:
    """On the host: where the VM suite's time went, every test (CI keeps the run within its budget)."""
    results = getattr(config, "_ipvsmgr_vm", None)
    if IN_VM or not results:
        return
    took = sorted(((float(r["took"]), node) for node, r in results.items() if r.get("took")), reverse=True)
    if not took:
        return
    terminalreporter.section(f"VM suite: {sum(t for t, _ in took):.0f}s in tests")
    for t, node in took:
        terminalreporter.write_line(f"{t:7.1f}s  {node}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    if IN_VM:
        _reports.pop("__running__", None)
        _save_reports()


# --------------------------------------------------------------- NAT lab

LAB = [
    "ip netns add cl", "ip netns add rs",
    "ip link add lb-cl type veth peer name cl0 netns cl",
    "ip link add lb-rs type veth peer name rs0 netns rs",
    "ip addr add 198.18.3.1/24 dev lb-cl", "ip link set lb-cl up",
    "ip addr add 198.18.2.1/24 dev lb-rs", "ip link set lb-rs up",
    "ip -n cl addr add 198.18.3.2/24 dev cl0", "ip -n cl link set cl0 up", "ip -n cl link set lo up",
    "ip -n cl route add default via 198.18.3.1",
    "ip -n rs addr add 198.18.2.2/24 dev rs0",
    *(f"ip -n rs addr add 198.18.2.{i}/32 dev rs0" for i in range(3, 8)),
    "ip -n rs link set rs0 up", "ip -n rs link set lo up",
    "ip -n rs route add default via 198.18.2.1",
    "sysctl -qw net.ipv4.ip_forward=1",
    "ip addr add 198.18.0.10/32 dev lo",  # IPVS takes packets for local VIPs (LOCAL_IN)
]  # fmt: skip


@pytest.fixture
def nat_lab() -> Iterator[None]:
    """client netns -> this VM as NAT load balancer -> real-server netns."""
    if not IN_VM:
        yield
        return
    from tests.kernel.helpers import sh

    try:
        for cmd in LAB:
            sh(*cmd.split())
        yield
    finally:
        # deleting a netns frees its veths asynchronously: delete them first
        sh("ip", "addr", "del", "198.18.0.10/32", "dev", "lo", check=False)
        sh("ip", "link", "del", "lb-cl", check=False)
        sh("ip", "link", "del", "lb-rs", check=False)
        sh("ip", "netns", "del", "cl", check=False)
        sh("ip", "netns", "del", "rs", check=False)
