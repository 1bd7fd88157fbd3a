"""The icmp checker against the server namespace's kernel, which answers pings."""

from __future__ import annotations

import asyncio

import pytest

from healthchecks.checkers.icmp import IcmpCheck, checksum
from healthchecks.result import Result, Target
from tests.netns.lab import CLIENT4, CLIENT6, SERVER4, SERVER6, Lab, down, sh

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

TIMEOUT = 1.0
UNUSED4, UNUSED6 = "198.18.200.77", "2001:db8:200::77"  # in the lab's subnets, held by nobody


def check(lab: Lab, target: Target, timeout: float = TIMEOUT, opts: IcmpCheck | None = None) -> Result:
    return lab.run(lambda: (opts or IcmpCheck()).check(target, timeout))


def test_checksum() -> None:
    # RFC 1071's worked example, and an odd length.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert checksum(b"\xff") == 0x00FF
    packet = bytes.fromhex("0800000012340001") + b"abc"
    with_sum = packet[:2] + checksum(packet).to_bytes(2, "big") + packet[4:]
    assert checksum(with_sum) == 0


def test_ping_v4_and_v6(lab: Lab) -> None:
    for address in (SERVER4, SERVER6):
        result = check(lab, Target(address, 80))  # the port is ignored
        assert result.ok, (address, result.reason)
        assert 0 < result.duration < TIMEOUT
    assert check(lab, Target(SERVER4), opts=IcmpCheck(size=1400)).ok


def test_source_address_is_bound(lab: Lab) -> None:
    assert check(lab, Target(SERVER4, source=CLIENT4)).ok
    assert check(lab, Target(SERVER6, source=CLIENT6)).ok
    assert down(check(lab, Target(SERVER4, source="198.18.200.99"))) == "source address not available"
    assert down(check(lab, Target(SERVER4, source=CLIENT6))).startswith("bad source address")


@pytest.mark.parametrize("address", [UNUSED4, UNUSED6])
def test_nobody_there_times_out(lab: Lab, address: str) -> None:
    result = check(lab, Target(address), timeout=0.5)
    assert down(result) == "timeout after 0.5s"
    assert 0.5 <= result.duration < 1.5


def test_echo_ignored_by_server_times_out(lab: Lab) -> None:
    for key in ("net.ipv4.icmp_echo_ignore_all", "net.ipv6.icmp.echo_ignore_all"):
        sh("ip", "netns", "exec", lab.server, "sysctl", "-qw", f"{key}=1")
    for address in (SERVER4, SERVER6):
        assert down(check(lab, Target(address), timeout=0.5)) == "timeout after 0.5s"


def test_unreachable_route_fails_fast(lab: Lab) -> None:
    # The client routes 198.18.201.0/24 and 2001:db8:201::/64 via the server,
    # which forwards but has unreachable routes for them: it answers our echo
    # request with an ICMP destination unreachable quoting it.
    sh("ip", "-n", lab.client, "route", "add", "198.18.201.0/24", "via", SERVER4)
    sh("ip", "-n", lab.client, "-6", "route", "add", "2001:db8:201::/64", "via", SERVER6)
    sh("ip", "netns", "exec", lab.server, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", lab.server, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    sh("ip", "-n", lab.server, "route", "add", "unreachable", "198.18.201.0/24")
    sh("ip", "-n", lab.server, "-6", "route", "add", "unreachable", "2001:db8:201::/64")
    v4 = check(lab, Target("198.18.201.5"))
    assert down(v4) == "host unreachable"
    v6 = check(lab, Target("2001:db8:201::5"))
    assert down(v6) == "network unreachable"  # ICMPv6 "no route to destination"
    assert v4.duration < TIMEOUT and v6.duration < TIMEOUT


def test_concurrent_checks_keep_their_own_replies(lab: Lab) -> None:
    # Every raw socket sees every ICMP message: each check must pick its own.
    targets = [Target(SERVER4), Target(SERVER6), Target(UNUSED4), Target(SERVER4), Target(UNUSED6)]

    async def all_at_once() -> list[Result]:
        return await asyncio.gather(*(IcmpCheck().check(t, 0.5) for t in targets))

    results = lab.run(all_at_once)
    assert [r.ok for r in results] == [True, True, False, True, False]
    assert {r.reason for r in results if not r.ok} == {"timeout after 0.5s"}


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        IcmpCheck(size=4)
