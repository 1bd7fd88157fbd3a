"""Every verdict and reason of the XDP guard, through BPF_PROG_TEST_RUN with
scapy-built packets, IPv4 and IPv6, on the host kernel. Replies built in XDP
(challenge, tarpit) are parsed back with scapy and checked field by field;
the challenge cookie is checked by answering it as a Linux client would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bpf_offload import guard, layout
from bpf_offload.tables import Service, Tables
from tests.netns.lab import have_root
from tests.netns.xdpkit import (
    CLIENT4,
    CLIENT6,
    MAC_C,
    MAC_S,
    VIP4,
    VIP6,
    loaded,
    reason_of,
    run,
    services,
    set_tables,
)  # fmt: skip

scapy = pytest.importorskip("scapy.all")
from scapy.all import (  # noqa: E402
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    raw,
)  # fmt: skip

pytestmark = pytest.mark.skipif(not have_root(), reason="BPF needs root")

BLOCK4, TARPIT4, ALLOW4 = "198.18.9.9", "198.18.9.66", "198.18.5.5"
BLOCK6, TARPIT6, ALLOW6 = "2001:db8:9::9", "2001:db8:9::66", "2001:db8:5::5"


@pytest.fixture
def g() -> Iterator[guard.LoadedGuard]:
    with loaded() as g:
        set_tables(
            g,
            Tables(
                services=services(VIP4, VIP6),
                allow=frozenset({"198.18.5.0/24", "2001:db8:5::/48"}),
                block={"198.18.9.9/32": "drop", "198.18.9.66/32": "tarpit",
                       "2001:db8:9::9/128": "drop", "2001:db8:9::66/128": "tarpit"},
                settings=layout.GuardSettings(sample_every=1),
            ),
        )  # fmt: skip
        yield g


def ip(fam: int, src: str | None = None, dst: str | None = None, **kw: Any) -> Any:
    if fam == 4:
        return Ether(src=MAC_C, dst=MAC_S) / IP(src=src or CLIENT4, dst=dst or VIP4, **kw)
    return Ether(src=MAC_C, dst=MAC_S) / IPv6(src=src or CLIENT6, dst=dst or VIP6, **kw)


def addr(fam: int, v4: str, v6: str) -> str:
    return v4 if fam == 4 else v6


FAMS = pytest.mark.parametrize("fam", [4, 6])
LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)]  # 40 bytes


def judge(g: guard.LoadedGuard, pkt: Any) -> tuple[str, str]:
    verdict, _, moved = run(g, raw(pkt))
    return verdict, reason_of(moved)


def test_not_ip_passes(g: guard.LoadedGuard) -> None:
    assert judge(g, Ether(src=MAC_C, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP4)) == ("pass", "not_ip")


@FAMS
def test_traffic_not_to_a_vip_passes_untouched(g: guard.LoadedGuard, fam: int) -> None:
    other = addr(fam, "198.18.1.11", "2001:db8:1::11")
    for pkt in (
        ip(fam, dst=other) / TCP(dport=179, flags="S"),  # BGP to the host
        ip(fam, dst=other) / TCP(flags="SF"),  # even nonsense: it is not ours to judge
        ip(fam, dst=addr(fam, "224.0.0.18", "ff02::12"), proto=112)
        if fam == 4
        else ip(fam, dst="ff02::12", nh=112),
    ):
        assert judge(g, pkt) == ("pass", "not_vip")


@FAMS
def test_service_traffic_passes(g: guard.LoadedGuard, fam: int) -> None:
    assert judge(g, ip(fam) / TCP(dport=80, flags="S")) == ("pass", "syn")
    assert judge(g, ip(fam) / TCP(dport=80, flags="A")) == ("pass", "vip")
    assert judge(g, ip(fam) / TCP(dport=80, flags="PA") / b"GET /") == ("pass", "vip")
    assert judge(g, ip(fam) / UDP(dport=53) / b"q") == ("pass", "vip")
    echo = ICMP() if fam == 4 else ICMPv6EchoRequest()
    assert judge(g, ip(fam) / echo) == ("pass", "icmp")


def test_vlan_tagged_packets_are_parsed(g: guard.LoadedGuard) -> None:
    pkt = Ether(src=MAC_C, dst=MAC_S) / Dot1Q(vlan=7) / IP(src=CLIENT4, dst=VIP4) / TCP(dport=81, flags="S")
    assert judge(g, pkt) == ("drop", "no_service")
    qinq = (
        Ether(src=MAC_C, dst=MAC_S)
        / Dot1Q(vlan=7)
        / Dot1Q(vlan=8)
        / IP(src=CLIENT4, dst=VIP4)
        / TCP(dport=80, flags="A")
    )
    assert judge(g, qinq) == ("pass", "vip")


@FAMS
def test_no_service_drops(g: guard.LoadedGuard, fam: int) -> None:
    assert judge(g, ip(fam) / TCP(dport=81, flags="S")) == ("drop", "no_service")
    assert judge(g, ip(fam) / UDP(dport=80)) == ("drop", "no_service")
    gre = ip(fam, proto=47) if fam == 4 else ip(fam, nh=47)
    assert judge(g, gre / (b"\x00" * 8)) == ("drop", "no_service")


def test_port_zero_service_takes_every_port(g: guard.LoadedGuard) -> None:
    set_tables(g, Tables(services=services(VIP4, VIP6) | {Service("198.18.1.20", 0, 6)}))
    assert judge(g, ip(4, dst="198.18.1.20") / TCP(dport=4444, flags="S")) == ("pass", "syn")
    assert judge(g, ip(4, dst="198.18.1.20") / UDP(dport=4444)) == ("drop", "no_service")


@FAMS
def test_fragments(g: guard.LoadedGuard, fam: int) -> None:
    if fam == 4:
        first_tcp = ip(4, flags="MF") / TCP(dport=80, flags="A")
        later_udp = ip(4, frag=100, proto=17) / (b"x" * 16)
    else:
        first_tcp = ip(6) / IPv6ExtHdrFragment(m=1, nh=6) / TCP(dport=80, flags="A")
        later_udp = ip(6) / IPv6ExtHdrFragment(offset=100, nh=17) / (b"x" * 16)
    assert judge(g, first_tcp) == ("drop", "fragment")
    assert judge(g, later_udp) == ("pass", "vip")  # no port to check; IPVS reassembles


@FAMS
@pytest.mark.parametrize("flags", ["", "SF", "SR", "FR", "F", "FPU", "P", "U", "SRA"])
def test_invalid_tcp_flags_drop(g: guard.LoadedGuard, fam: int, flags: str) -> None:
    assert judge(g, ip(fam) / TCP(dport=80, flags=flags)) == ("drop", "bad_flags")


@FAMS
def test_truncated_tcp_header_drops(g: guard.LoadedGuard, fam: int) -> None:
    pkt = raw(ip(fam) / TCP(dport=80, flags="S"))[:-8]  # 12 of the 20 bytes
    verdict, _, moved = run(g, pkt)
    assert (verdict, reason_of(moved)) == ("drop", "malformed")


@FAMS
def test_allowlist_skips_every_check(g: guard.LoadedGuard, fam: int) -> None:
    src = addr(fam, ALLOW4, ALLOW6)
    assert judge(g, ip(fam, src=src) / TCP(dport=81, flags="SF")) == ("pass", "allowlist")


@FAMS
def test_blocklist_drops_everything_to_vips(g: guard.LoadedGuard, fam: int) -> None:
    src = addr(fam, BLOCK4, BLOCK6)
    assert judge(g, ip(fam, src=src) / TCP(dport=80, flags="S")) == ("drop", "blocklist")
    echo = ICMP() if fam == 4 else ICMPv6EchoRequest()
    assert judge(g, ip(fam, src=src) / echo) == ("drop", "blocklist")
    # but not what goes to the host itself
    assert judge(g, ip(fam, src=src, dst=addr(fam, "198.18.1.11", "2001:db8:1::11")) / TCP()) == (
        "pass",
        "not_vip",
    )


def test_longest_prefix_decides_between_the_lists(g: guard.LoadedGuard) -> None:
    set_tables(g, Tables(services=services(VIP4, VIP6), allow=frozenset({"198.18.40.0/24", "198.18.41.7/32"}),
                         block={"198.18.40.7/32": "drop", "198.18.41.0/24": "drop"}))  # fmt: skip
    syn = TCP(dport=80, flags="S")
    assert judge(g, ip(4, src="198.18.40.8") / syn) == ("pass", "allowlist")
    assert judge(g, ip(4, src="198.18.40.7") / syn) == ("drop", "blocklist")
    assert judge(g, ip(4, src="198.18.41.8") / syn) == ("drop", "blocklist")
    assert judge(g, ip(4, src="198.18.41.7") / syn) == ("pass", "allowlist")
    assert judge(g, ip(4, src="198.18.42.7") / syn) == ("pass", "syn")


def checked(out: bytes, fam: int) -> Any:
    """Parse a reply and verify its checksums by recomputing them with scapy."""
    p = Ether(out)
    l3 = p[IP] if fam == 4 else p[IPv6]
    tcp = p[TCP]
    sums = (l3.chksum if fam == 4 else None, tcp.chksum)
    if fam == 4:
        del l3.chksum
    del tcp.chksum
    again = Ether(raw(p))
    assert ((again[IP].chksum if fam == 4 else None), again[TCP].chksum) == sums
    return Ether(out)


def assert_synack_to_client(p: Any, fam: int, src: str, sport: int, dport: int) -> Any:
    assert (p.src, p.dst) == (MAC_S, MAC_C)
    l3 = p[IP] if fam == 4 else p[IPv6]
    assert (l3.src, l3.dst) == (addr(fam, VIP4, VIP6), src)
    if fam == 4:
        assert (l3.ihl, l3.len, l3.ttl, l3.flags, l3.frag) == (5, 44, 64, "DF", 0)
    else:
        assert (l3.plen, l3.hlim, l3.nh) == (24, 64, 6)
    t = p[TCP]
    assert (t.sport, t.dport, str(t.flags), t.dataofs) == (dport, sport, "SA", 6)
    return t


@FAMS
def test_tarpit_answers_syn_with_a_zero_window_synack(g: guard.LoadedGuard, fam: int) -> None:
    src = addr(fam, TARPIT4, TARPIT6)
    syn = ip(fam, src=src) / TCP(sport=40000, dport=80, flags="S", seq=1000, options=LINUX_SYN_OPTIONS)
    verdict, out, moved = run(g, raw(syn))
    assert (verdict, reason_of(moved)) == ("tx", "tarpit")
    t = assert_synack_to_client(checked(out, fam), fam, src, 40000, 80)
    assert (t.ack, t.window, t.options) == (1001, 0, [("MSS", 536)])
    # everything else from a tarpitted source is dropped
    assert judge(g, ip(fam, src=src) / TCP(sport=40000, dport=80, flags="A")) == ("drop", "blocklist")


@FAMS
def test_per_source_syn_rate(g: guard.LoadedGuard, fam: int) -> None:
    set_tables(g, Tables(services=services(VIP4, VIP6),
                         settings=layout.GuardSettings(src_syn_rate=1, src_syn_burst=2)))  # fmt: skip
    syn = ip(fam) / TCP(dport=80, flags="S")
    assert [judge(g, syn) for _ in range(3)] == [("pass", "syn")] * 2 + [("drop", "source_rate")]
    other = ip(fam, src=addr(fam, "198.18.0.8", "2001:db8::8")) / TCP(dport=80, flags="S")
    assert judge(g, other) == ("pass", "syn")
    assert judge(g, ip(fam) / TCP(dport=80, flags="A")) == ("pass", "vip")  # only SYNs are limited


def under_attack(g: guard.LoadedGuard, fam: int, challenge: str = "rst-cookie", **budget: int) -> None:
    settings = layout.GuardSettings(attack_syn_rate=1, attack_hold=30, challenge=challenge, **budget)
    set_tables(g, Tables(services=services(VIP4, VIP6), settings=settings))
    starter = ip(fam, src=addr(fam, "198.18.0.99", "2001:db8::99")) / TCP(dport=80, flags="S")
    assert judge(g, starter) == ("pass", "syn")  # the first SYN is within the rate


@FAMS
def test_challenge_synack_then_rst_cookie_verifies_the_source(g: guard.LoadedGuard, fam: int) -> None:
    under_attack(g, fam)
    syn = ip(fam) / TCP(sport=41000, dport=80, flags="S", seq=7777, options=LINUX_SYN_OPTIONS)
    verdict, out, moved = run(g, raw(syn))
    assert (verdict, reason_of(moved)) == ("tx", "challenge")
    t = assert_synack_to_client(checked(out, fam), fam, addr(fam, CLIENT4, CLIENT6), 41000, 80)
    assert t.window == 65535 and t.options == [("MSS", 1460 if fam == 4 else 1440)]
    assert t.ack != 7778  # deliberately unacceptable: the client must answer with a RST
    [[attack]] = [[v for v in guard.read_attack(g.maps, 0) if v.address == addr(fam, VIP4, VIP6)]]
    assert attack.under_attack and attack.attacks == 1

    # A forged answer (wrong cookie) verifies nothing and is left to the stack.
    # (The kernel's cookie is a 24-bit keyed hash plus the MSS index in its low
    # bits, so a blind guess wins about once in 2^22 tries, for one source.)
    wrong = ip(fam) / TCP(sport=41000, dport=80, flags="R", seq=t.ack ^ 0x5A5A5A5A)
    assert judge(g, wrong) == ("pass", "vip")
    assert judge(g, syn) == ("tx", "challenge")
    # The right answer from another port of the same source is not valid either:
    # the cookie binds the 4-tuple.
    other_port = ip(fam) / TCP(sport=41001, dport=80, flags="R", seq=t.ack)
    assert judge(g, other_port) == ("pass", "vip")

    # RFC 793: SYN-SENT + unacceptable ACK -> RST with seq = SEG.ACK, no ACK bit.
    rst = ip(fam) / TCP(sport=41000, dport=80, flags="R", seq=t.ack)
    assert judge(g, rst) == ("drop", "challenge_passed")
    # the retransmitted SYN (and any later one from that source) goes to IPVS
    assert judge(g, syn) == ("pass", "verified")
    assert judge(g, ip(fam) / TCP(sport=41002, dport=80, flags="S")) == ("pass", "verified")
    assert len(g.maps["verified"].key_list()) == 1


@FAMS
def test_unchallengeable_syn_is_dropped_under_attack(g: guard.LoadedGuard, fam: int) -> None:
    under_attack(g, fam)
    if fam == 4:
        pkt = ip(4, options=b"\x01\x01\x01\x00") / TCP(dport=80, flags="S")  # NOPs + EOL: ihl 6
    else:
        pkt = ip(6) / IPv6ExtHdrDestOpt(nh=6) / TCP(dport=80, flags="S")
    assert judge(g, pkt) == ("drop", "unchallengeable")


@FAMS
def test_retransmission_test_passes_the_same_syn_after_one_rto(g: guard.LoadedGuard, fam: int) -> None:
    under_attack(g, fam, challenge="retransmit")
    syn = ip(fam) / TCP(sport=41000, dport=80, flags="S", seq=7777, options=LINUX_SYN_OPTIONS)
    verdict, out, moved = run(g, raw(syn))
    assert (verdict, reason_of(moved)) == ("drop", "retransmit_wait")  # nothing is sent back
    other_isn = ip(fam) / TCP(sport=41000, dport=80, flags="S", seq=9999, options=LINUX_SYN_OPTIONS)
    assert judge(g, other_isn) == ("drop", "retransmit_wait")  # a new attempt: a SYN of its own
    time.sleep(1.0)  # Linux's initial RTO (RFC 6298)
    assert judge(g, syn) == ("pass", "retransmit_passed")
    # the source is verified: its next connections pass at once
    assert judge(g, ip(fam) / TCP(sport=41002, dport=80, flags="S")) == ("pass", "verified")
    assert len(g.maps["verified"].key_list()) == 1


@FAMS
def test_retransmission_test_refuses_copies_at_other_intervals(g: guard.LoadedGuard, fam: int) -> None:
    under_attack(g, fam, challenge="retransmit")
    syn = ip(fam) / TCP(sport=41000, dport=80, flags="S", seq=1234)
    assert judge(g, syn) == ("drop", "retransmit_wait")
    # a copy sooner than any retransmission timer: a replay, or a duplicate
    assert judge(g, syn) == ("drop", "retransmit_early")
    time.sleep(0.3)
    assert judge(g, syn) == ("drop", "retransmit_early")
    # A replay that repeats every 0.3 s never passes: each copy is early.
    for _ in range(4):
        time.sleep(0.3)
        assert judge(g, syn) == ("drop", "retransmit_early")
    # a copy later than any retransmission timer (3.5 s) finds the first forgotten
    late = ip(fam) / TCP(sport=41001, dport=80, flags="S", seq=1234)
    assert judge(g, late) == ("drop", "retransmit_wait")
    time.sleep(3.9)
    assert judge(g, late) == ("drop", "retransmit_wait")
    assert g.maps["verified"].key_list() == []


def test_retransmission_test_passes_a_three_second_rto(g: guard.LoadedGuard) -> None:
    under_attack(g, 4, challenge="retransmit")
    syn = ip(4) / TCP(sport=41000, dport=80, flags="S", seq=55)
    assert judge(g, syn) == ("drop", "retransmit_wait")
    time.sleep(3.0)  # older Windows, and a 1 s stack's second retransmission
    assert judge(g, syn) == ("pass", "retransmit_passed")


@pytest.mark.parametrize("challenge", ["retransmit", "rst-cookie"])
def test_a_verified_source_spends_a_budget(g: guard.LoadedGuard, challenge: str) -> None:
    under_attack(g, 4, challenge=challenge, verified_syn_rate=1, verified_syn_burst=3)
    if challenge == "retransmit":
        syn = ip(4) / TCP(sport=40999, dport=80, flags="S", seq=5)
        judge(g, syn)
        time.sleep(1.0)
        assert judge(g, syn) == ("pass", "retransmit_passed")
    else:
        _, out, _ = run(g, raw(ip(4) / TCP(sport=40999, dport=80, flags="S")))
        t = checked(out, 4)[TCP]
        answer = ip(4) / TCP(sport=40999, dport=80, flags="R", seq=t.ack)
        assert judge(g, answer) == ("drop", "challenge_passed")
    syns = [ip(4) / TCP(sport=42000 + i, dport=80, flags="S", seq=i) for i in range(5)]
    got = [judge(g, s) for s in syns]
    assert got == [("pass", "verified")] * 3 + [("drop", "over_budget")] * 2
    if challenge == "retransmit":
        # Over its budget nothing passes, not even a retransmission that
        # would pass the test (a real host can pass any test).
        time.sleep(1.0)
        assert judge(g, syns[3]) == ("pass", "verified")  # refilled at 1/s
        assert judge(g, syns[4]) == ("drop", "over_budget")


def test_challenge_off_leaves_syns_to_the_kernel(g: guard.LoadedGuard) -> None:
    set_tables(g, Tables(services=services(VIP4, VIP6),
                         settings=layout.GuardSettings(attack_syn_rate=1, challenge="off")))  # fmt: skip
    verdicts = [judge(g, ip(4) / TCP(sport=50000 + i, dport=80, flags="S")) for i in range(3)]
    assert verdicts == [("pass", "syn")] * 3
    assert [v.under_attack for v in guard.read_attack(g.maps, 0) if v.address == VIP4] == [True]


def test_vlan_challenge_keeps_the_tag(g: guard.LoadedGuard) -> None:
    under_attack(g, 4)
    syn = Ether(src=MAC_C, dst=MAC_S) / Dot1Q(vlan=42) / IP(src=CLIENT4, dst=VIP4) / TCP(dport=80, flags="S")
    verdict, out, _ = run(g, raw(syn))
    assert verdict == "tx"
    p = checked(out, 4)
    assert p[Dot1Q].vlan == 42 and p[IP].dst == CLIENT4


def test_drop_samples_record_what_was_dropped(g: guard.LoadedGuard) -> None:
    judge(g, ip(4) / TCP(sport=1234, dport=81, flags="S"))
    judge(g, ip(6, src=BLOCK6) / UDP(sport=5, dport=53))
    s = guard.read_samples(g.maps)
    assert [(x.reason, x.source, x.destination, x.sport, x.dport, x.proto) for x in s] == [
        ("no_service", CLIENT4, VIP4, 1234, 81, 6),
        ("blocklist", BLOCK6, VIP6, 5, 53, 17),
    ]
    assert s[0].tcp_flags == 0x02
