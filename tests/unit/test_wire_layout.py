"""decode_dest's learnt-layout fast path gives exactly what the generic pass gives."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs import wire
from ipvsmgr.ipvs.model import Destination

U64 = struct.Struct("=Q")


def kernel_dest_message(
    af: int, addr: str, port: int, vals: dict[str, int], order: str = "kernel"
) -> wire.Message:
    """A GET_DEST reply laid out as Linux's ip_vs_genl_fill_dest writes it."""
    attrs = [
        wire.nla(c.IPVS_DEST_ATTR_ADDR, wire.addr_bytes(af, addr)),
        wire.nla_be16(c.IPVS_DEST_ATTR_PORT, port),
        wire.nla_u32(c.IPVS_DEST_ATTR_FWD_METHOD, vals["fwd"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_WEIGHT, vals["weight"]),
        wire.nla_u8(c.IPVS_DEST_ATTR_TUN_TYPE, vals["tun_type"]),
        wire.nla_be16(c.IPVS_DEST_ATTR_TUN_PORT, vals["tun_port"]),
        wire.nla_u16(c.IPVS_DEST_ATTR_TUN_FLAGS, vals["tun_flags"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_U_THRESH, vals["u"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_L_THRESH, vals["l"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_ACTIVE_CONNS, vals["act"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_INACT_CONNS, vals["inact"]),
        wire.nla_u32(c.IPVS_DEST_ATTR_PERSIST_CONNS, vals["pers"]),
        wire.nla_u16(c.IPVS_DEST_ATTR_ADDR_FAMILY, af),
    ]
    if order == "reversed":
        attrs.reverse()
    stats32 = b"".join(wire.nla_u32(t, t * 11) for t in range(1, 4))
    stats64 = b"".join(wire.nla(t, U64.pack(vals["bytes"] + t)) for t in range(1, 11))
    attrs.append(wire.nla_nested(c.IPVS_DEST_ATTR_STATS, stats32))
    attrs.append(wire.nla_nested(c.IPVS_DEST_ATTR_STATS64, stats64))
    body = wire.nla_nested(c.IPVS_CMD_ATTR_DEST, b"".join(attrs))
    return next(wire.iter_messages(wire.message(0x20, c.NLM_F_MULTI, 7, c.IPVS_CMD_NEW_DEST, body)))


def slow(msg: wire.Message, af: int, stats: bool) -> Destination:
    return wire._decode_dest_slow(msg, af, stats)


def full(d: Destination) -> tuple[object, ...]:
    return (d, d.active_conns, d.inact_conns, d.persist_conns, d.stats)


values = st.fixed_dictionaries(
    {
        "fwd": st.sampled_from([0, 2, 3]),
        "weight": st.integers(0, 65535),
        "tun_type": st.integers(0, 2),
        "tun_port": st.integers(0, 65535),
        "tun_flags": st.integers(0, 3),
        "u": st.integers(0, 2**32 - 1),
        "l": st.integers(0, 2**32 - 1),
        "act": st.integers(0, 2**32 - 1),
        "inact": st.integers(0, 2**32 - 1),
        "pers": st.integers(0, 2**32 - 1),
        "bytes": st.integers(0, 2**63),
    }
)


@given(
    st.one_of(
        st.tuples(st.just(socket.AF_INET), st.ip_addresses(v=4).map(str)),
        st.tuples(st.just(socket.AF_INET6), st.ip_addresses(v=6).map(str)),
    ),
    st.integers(0, 65535),
    values,
    st.booleans(),
)
def test_fast_path_equals_generic_pass(
    addr: tuple[int, str], port: int, vals: dict[str, int], stats: bool
) -> None:
    af, text = addr
    msg = kernel_dest_message(af, text, port, vals)
    wire.decode_dest(msg, af, stats)  # learn (or re-learn) the layout
    assert wire._dest_layout[0] is not None
    fast = wire.decode_dest(msg, af, stats)
    assert full(fast) == full(slow(msg, af, stats))
    assert fast.key.port == port and fast.tun_port == vals["tun_port"]
    if stats:
        assert fast.stats is not None and fast.stats.conns == vals["bytes"] + 1  # STATS64 wins


def test_a_different_layout_is_noticed_and_learnt() -> None:
    vals = {"fwd": 2, "weight": 5, "tun_type": 1, "tun_port": 6080, "tun_flags": 1, "u": 9, "l": 3,
            "act": 4, "inact": 2, "pers": 1, "bytes": 100}  # fmt: skip
    kernel = kernel_dest_message(socket.AF_INET, "198.18.1.1", 80, vals)
    other = kernel_dest_message(socket.AF_INET, "198.18.1.2", 81, vals, order="reversed")
    wire.decode_dest(kernel, socket.AF_INET)
    learnt = wire._dest_layout[0]
    d = wire.decode_dest(other, socket.AF_INET)  # headers differ: the generic pass decodes it
    assert full(d) == full(slow(other, socket.AF_INET, True))
    assert wire._dest_layout[0] is not learnt
    # and an encoder-made message (no connection counters) never gets a layout
    ours = wire.message(0x20, 0, 1, c.IPVS_CMD_NEW_DEST, wire.dest_attr(d))
    assert wire.decode_dest(next(wire.iter_messages(ours)), socket.AF_INET) == d
    assert wire._dest_layout[0] is None
