"""The byte layouts of guard.h's structs, and the verdict reasons in the program's order."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

# enum guard_reason, in order: (name, verdict)
REASONS: tuple[tuple[str, str], ...] = (
    ("not_ip", "pass"),
    ("not_vip", "pass"),
    ("allowlist", "pass"),
    ("vip", "pass"),
    ("syn", "pass"),
    ("verified", "pass"),
    ("icmp", "pass"),
    ("blocklist", "drop"),
    ("tarpit", "tx"),
    ("no_service", "drop"),
    ("fragment", "drop"),
    ("bad_flags", "drop"),
    ("source_rate", "drop"),
    ("challenge", "tx"),
    ("challenge_passed", "drop"),
    ("malformed", "drop"),
    ("unchallengeable", "drop"),
    ("retransmit_wait", "drop"),
    ("retransmit_early", "drop"),
    ("retransmit_passed", "pass"),
    ("over_budget", "drop"),
)
REASON_INDEX = {name: i for i, (name, _) in enumerate(REASONS)}

PROTO_BITS = {socket.IPPROTO_TCP: 1, socket.IPPROTO_UDP: 2, 132: 4}  # 132 = SCTP
LIST_ACTIONS = {"drop": 1, "tarpit": 2, "allow": 3}
LIST_ACTION_NAMES = {v: k for k, v in LIST_ACTIONS.items()}
F_CHALLENGE = 1
F_RST_COOKIE = 2
CHALLENGES = ("retransmit", "rst-cookie", "off")

VIP = struct.Struct("=II")  # index, protos
SVC_KEY = struct.Struct("=16sHBx")  # address, port (network order bytes), proto
LPM_KEY = struct.Struct("=I16s")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
VIP_STATE = struct.Struct("=QQQQQ")
CONFIG = struct.Struct("=QQQQQQQIIII")
VERIFIED = struct.Struct("=QQQ")  # until, budget milli-tokens, budget last refill
RETX_BLOCK_SIZE = 64
STAT = struct.Struct("=QQ")
SAMPLE = struct.Struct("=Q16s16sHHBBBxII")
MAX_VIPS = 4096
SAMPLES = 256
FILTER_BITS = 65536
HASH_MUL = 0x9E3779B1


def filter_bit(raw16: bytes) -> int:
    """guard.h's VIP filter hash: the address's four words in host order, folded."""
    w0, w1, w2, w3 = struct.unpack("=IIII", raw16)
    return int((((w0 ^ w1 ^ w2 ^ w3) * HASH_MUL) & 0xFFFFFFFF) >> 16)


def vip_filter(addresses: list[bytes]) -> bytes:
    bits = bytearray(FILTER_BITS // 8)
    for a in addresses:
        h = filter_bit(a)
        bits[h >> 3] |= 1 << (h & 7)  # little-endian u64 words: bit h is byte h/8, bit h%8
    return bytes(bits)


def addr16(address: str) -> bytes:
    """The map form of an address: IPv6 as is, IPv4 mapped into ::ffff:0:0/96."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return b"\0" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def addr_text(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped or ip)


def lpm_key(prefix: str) -> bytes:
    net = ipaddress.ip_network(prefix, strict=False)
    bits = net.prefixlen + (96 if net.version == 4 else 0)
    return LPM_KEY.pack(bits, addr16(str(net.network_address)))


def lpm_prefix(key: bytes) -> str:
    bits, raw = LPM_KEY.unpack(key)
    ip = ipaddress.IPv6Address(raw)
    if ip.ipv4_mapped is not None and bits >= 96:
        return f"{ip.ipv4_mapped}/{bits - 96}"
    return f"{ip}/{bits}"


def svc_key(address: str, port: int, proto: int) -> bytes:
    return SVC_KEY.pack(addr16(address), socket.htons(port), proto)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """What the config map holds (the limits; list sizes are filled in at sync)."""

    src_syn_rate: int = 0
    src_syn_burst: int = 0
    attack_syn_rate: int = 0
    attack_hold: float = 10.0
    verified_ttl: float = 600.0
    challenge: str = "retransmit"  # one of CHALLENGES
    verified_syn_rate: int = 50
    verified_syn_burst: int = 100
    sample_every: int = 64

    @property
    def flags(self) -> int:
        if self.challenge == "off":
            return 0
        return F_CHALLENGE | (F_RST_COOKIE if self.challenge == "rst-cookie" else 0)

    def pack(self, source_entries: int) -> bytes:
        return CONFIG.pack(
            self.src_syn_rate,
            self.src_syn_burst,
            self.attack_syn_rate,
            int(self.attack_hold * 1e9),
            int(self.verified_ttl * 1e9),
            self.verified_syn_rate,
            self.verified_syn_burst,
            self.flags,
            self.sample_every,
            source_entries,
            0,
        )


@dataclass(frozen=True, slots=True)
class DropSample:
    ktime_ns: int
    source: str
    destination: str
    sport: int
    dport: int
    proto: int
    reason: str
    tcp_flags: int
    ifindex: int

    @classmethod
    def unpack(cls, raw: bytes) -> DropSample:
        t, s, d, sp, dp, proto, reason, flags, ifindex, _ = SAMPLE.unpack(raw[: SAMPLE.size])
        name = REASONS[reason][0] if reason < len(REASONS) else str(reason)
        return cls(
            t, addr_text(s), addr_text(d), socket.ntohs(sp), socket.ntohs(dp), proto, name, flags, ifindex
        )
