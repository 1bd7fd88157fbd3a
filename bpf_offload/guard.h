/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0 */
/*
 * Layouts shared by the XDP guard (xdp_guard.c) and its loader
 * (bpf_offload/maps.py packs the same structs with the struct module).
 * Every struct is padded by hand so both sides agree without a compiler.
 */
#ifndef IPVSMGR_GUARD_H
#define IPVSMGR_GUARD_H

#include <linux/types.h>

/* Addresses are 16 bytes in every map; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) so one trie and one table serve both families. */
struct guard_addr {
	__u8 b[16];
};

/* LPM trie key: prefix length counts the 96 mapped bits for IPv4. */
struct guard_lpm_key {
	__u32 prefixlen;
	__u8 b[16];
};

/* The source trie's values: the longest matching prefix decides, so an
 * address allowed inside a blocked range (or blocked inside an allowed
 * one) is said with a longer prefix. */
enum guard_list_action {
	GUARD_LIST_DROP = 1,
	GUARD_LIST_TARPIT = 2,
	GUARD_LIST_ALLOW = 3,
};

/* A 65,536-bit filter of VIP addresses (by guard_addr_hash): most packets
 * a host receives are not to a VIP, and one bit test in an array sends
 * them on without a hash table lookup. */
#define GUARD_FILTER_BITS 65536
struct guard_vip_filter {
	__u64 words[GUARD_FILTER_BITS / 64];
};

/* The four 32-bit words of the address, read in host order, folded and
 * multiplied by the 32-bit golden ratio; the top 16 bits pick the bit. */
#define GUARD_HASH_MUL 0x9E3779B1u

#define GUARD_PROTO_TCP (1u << 0)
#define GUARD_PROTO_UDP (1u << 1)
#define GUARD_PROTO_SCTP (1u << 2)

struct guard_vip {
	__u32 index;  /* slot in vip_state */
	__u32 protos; /* GUARD_PROTO_* with at least one virtual server */
};

/* services: key -> the VIP's state slot (guard_vip.index) */
struct guard_svc_key {
	struct guard_addr addr;
	__u16 port; /* network order; 0 = every port (a port-0 virtual server) */
	__u8 proto; /* IPPROTO_* */
	__u8 pad;
};

struct guard_vip_state {
	__u64 window_start_ns;
	__u64 window_syns;
	__u64 last_window_syns; /* SYNs in the last whole second, for status */
	__u64 attack_until_ns;
	__u64 attack_started; /* number of times attack mode was entered */
};

struct guard_bucket {
	__u64 milli_tokens;
	__u64 last_ns;
};

/* A source that passed the challenge: trusted until until_ns, and while
 * trusted its SYNs spend a budget (guard_config.verified_syn_rate). */
struct guard_verified {
	__u64 until_ns;
	struct guard_bucket budget;
};

/* The retransmission test's memory: the SYNs seen (a hash of source,
 * ports, destination and ISN), in blocks of one cache line.  The hash
 * picks the block; each of its 16 entries holds a 20-bit fingerprint and
 * the 12-bit generation (2^28 ns, 0.268 s) the SYN was last seen in.  A
 * new SYN takes an entry that is empty or too old to match, so 8 Mi
 * entries remember every first SYN of a random-source flood of up to
 * about 2.5 million SYN/s (16 per block per 3.2 s). */
#define GUARD_RETX_BLOCK_BITS 19
#define GUARD_RETX_BLOCKS (1u << GUARD_RETX_BLOCK_BITS) /* 32 MiB */
#define GUARD_RETX_WORDS 16
#define GUARD_RETX_GEN_SHIFT 28
struct guard_retx_block {
	__u32 w[GUARD_RETX_WORDS];
};

#define GUARD_F_CHALLENGE (1u << 0)
#define GUARD_F_RST_COOKIE (1u << 1) /* the challenge is the RST cookie, not the retransmission test */

struct guard_config {
	__u64 src_syn_rate;  /* SYN/s per source; 0 = no per-source limit */
	__u64 src_syn_burst; /* bucket depth in SYNs */
	__u64 attack_syn_rate; /* SYN/s per VIP that starts attack mode; 0 = never */
	__u64 attack_hold_ns;  /* attack mode lasts this long after the last excess */
	__u64 verified_ttl_ns; /* a source that passed a challenge is trusted this long */
	__u64 verified_syn_rate;  /* SYN/s a verified source may send under attack; 0 = no budget */
	__u64 verified_syn_burst; /* its bucket depth in SYNs */
	__u32 flags;
	__u32 sample_every; /* one drop sample per this many drops of a reason; 0 = none */
	__u32 source_entries; /* the source trie is not consulted while empty */
	__u32 pad;
};

/* Verdict reasons: index into the per-CPU stats array. Keep in the
 * order of bpf_offload/reasons.py. */
enum guard_reason {
	R_PASS_NOT_IP = 0,
	R_PASS_NOT_VIP,
	R_PASS_ALLOWLIST,
	R_PASS_VIP,
	R_PASS_SYN,
	R_PASS_VERIFIED,
	R_PASS_ICMP,
	R_DROP_BLOCKLIST,
	R_TX_TARPIT,
	R_DROP_NO_SERVICE,
	R_DROP_FRAGMENT,
	R_DROP_BAD_FLAGS,
	R_DROP_SRC_RATE,
	R_TX_CHALLENGE,
	R_DROP_CHALLENGE_PASSED,
	R_DROP_MALFORMED,
	R_DROP_UNCHALLENGEABLE,
	R_DROP_RETX_WAIT,   /* first SYN of an unverified source: remembered, dropped */
	R_DROP_RETX_EARLY,  /* the same SYN again sooner than a retransmission timer fires */
	R_PASS_RETX,        /* a retransmission of a remembered SYN: passed, source verified */
	R_DROP_OVER_BUDGET, /* a verified source over its budget */
	R_MAX,
};

struct guard_stat {
	__u64 packets;
	__u64 bytes;
};

struct guard_sample {
	__u64 ktime_ns;
	struct guard_addr saddr;
	struct guard_addr daddr;
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u8 proto;
	__u8 reason;
	__u8 tcp_flags;
	__u8 pad;
	__u32 ifindex;
	__u32 pad2;
};

#define GUARD_SAMPLES 256
#define GUARD_MAX_VIPS 4096

#endif
