// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/*
 * ipvsmgr XDP guard: filters traffic to the virtual IPs before the kernel
 * stack (and IPVS, which creates a connection entry per SYN) does any work.
 *
 * Traffic that is not addressed to a VIP passes untouched: ARP, VRRP, BGP,
 * health-check replies and ICMP to the host never meet a rule.  For a VIP:
 * allowlist, blocklist (drop or tarpit), no-service drop, fragment and
 * TCP-flag sanity, a per-source SYN token bucket, and per-VIP attack mode
 * in which unverified sources must answer a challenge first.
 *
 * Two challenges (docs/xdp-challenge.md compares them with figures):
 *
 * The retransmission test (default): the first SYN of an unverified source
 * is remembered (source, ports, destination, ISN) and dropped.  A client
 * retransmits the same SYN when its timer fires (RFC 6298: 1 s; 3 s on old
 * stacks); when that copy arrives at a plausible interval and not sooner,
 * it passes and the source is verified.  Nothing is sent to the source, so
 * a NAT router or stateful firewall on the way sees an ordinary retried
 * SYN, and spoofing a live host makes it answer nothing.  Sending every SYN
 * twice at the right interval passes the test: the budget below bounds
 * what a verified source gets.
 *
 * The RST cookie: IPVS forwards SYNs to real servers, which cannot
 * validate a cookie we minted, so a classic SYN-cookie handshake answered
 * here would leave the client connected to nobody.  Instead the challenge
 * SYN-ACK carries the cookie in its acknowledgment number, which is
 * deliberately not the client's ISN + 1.  RFC 793 (3.4, SYN-SENT) makes the
 * client answer an unacceptable ACK with a RST whose sequence number is
 * that acknowledgment number, and keep its connection attempt alive.  The
 * RST comes back here, the cookie is checked, the source is remembered as
 * verified and the RST is dropped; the client's SYN retransmission passes.
 * The cookie is the kernel's syncookie (keyed hash of the 4-tuple and a
 * minute counter, valid for about two minutes) over a fixed ISN of 0.
 * Stateful middleboxes drop or mistranslate that SYN-ACK, and a live host
 * whose address is spoofed answers it with the very RST that verifies it.
 *
 * Verified sources spend a per-source budget of SYNs under attack, and
 * what is over it is dropped whatever it answers, so neither a verified
 * bot nor the spoofed address of a host that answered opens the gate.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "guard.h"

/* The GPL-2.0 side of the dual licence: the syncookie helpers are GPL-only. */
char LICENSE[] SEC("license") = "GPL";

#define NSEC_PER_SEC 1000000000ULL
#define COOKIE_WINDOW_NS (180ULL * NSEC_PER_SEC) /* kernel cookies live < 3 min */
#define MAX_L3_OFF 22 /* Ethernet + two VLAN tags */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GUARD_MAX_VIPS);
	__type(key, struct guard_addr);
	__type(value, struct guard_vip);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct guard_svc_key);
	__type(value, __u32);
} services SEC(".maps");

/* allowlist and blocklist in one trie: one lookup, longest prefix decides */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm_key);
	__type(value, __u32); /* enum guard_list_action */
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_vip_filter);
} vip_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct guard_vip_state);
} vip_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct guard_addr);
	__type(value, struct guard_bucket);
} src_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct guard_addr);
	__type(value, struct guard_verified);
} verified SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_RETX_BLOCKS);
	__type(key, __u32);
	__type(value, struct guard_retx_block);
} retx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_MAX);
	__type(key, __u32);
	__type(value, struct guard_stat);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_SAMPLES);
	__type(key, __u32);
	__type(value, struct guard_sample);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64); /* samples written so far; slot = count % GUARD_SAMPLES */
} sample_seq SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the parser learnt about one packet. */
struct flow {
	struct guard_addr src;
	struct guard_addr dst;
	__u32 l3off;
	__u32 l4off;
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 fragment; /* 1: first fragment, 2: a later one (no L4 header) */
	__u8 plain;    /* no IP options / extension headers: a reply can be built */
	__u16 sport;
	__u16 dport;
	__u8 tcp_flags;
	__u32 tcp_seq; /* host order */
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20

static __always_inline void sample_drop(struct xdp_md *ctx, struct flow *f, __u32 reason)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&sample_seq, &zero);
	if (!seq)
		return;
	__u32 slot = __sync_fetch_and_add(seq, 1) % GUARD_SAMPLES;
	struct guard_sample *s = bpf_map_lookup_elem(&samples, &slot);
	if (!s)
		return;
	s->ktime_ns = bpf_ktime_get_ns();
	s->saddr = f->src;
	s->daddr = f->dst;
	s->sport = f->sport;
	s->dport = f->dport;
	s->proto = f->proto;
	s->reason = reason;
	s->tcp_flags = f->tcp_flags;
	s->ifindex = ctx->ingress_ifindex;
}

static __always_inline int verdict(struct xdp_md *ctx, struct guard_config *cfg, struct flow *f,
				   __u32 reason, int action)
{
	struct guard_stat *st = bpf_map_lookup_elem(&stats, &reason);
	if (!st)
		return action;
	st->packets++;
	st->bytes += ctx->data_end - ctx->data;
	if (action == XDP_DROP && f && cfg && cfg->sample_every &&
	    st->packets % cfg->sample_every == 1 % cfg->sample_every)
		sample_drop(ctx, f, reason);
	return action;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline __u32 sum16(const void *p, int words)
{
	const __u16 *w = p;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

/* Answer a SYN from XDP: turn the packet into a SYN-ACK from the VIP with
 * the given sequence, acknowledgment and window, and one MSS option. */
static __always_inline int reply_synack(struct xdp_md *ctx, struct guard_config *cfg, struct flow *f,
					__u32 seq, __u32 ack, __u16 window, __u16 mss, __u32 reason)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];
	__u32 l3off = f->l3off;
	__u32 ip_len = f->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	struct {
		struct tcphdr th;
		__u8 opt[4];
	} t = {};
	__u32 sum;

	if ((void *)(eth + 1) > data_end)
		return verdict(ctx, cfg, f, R_DROP_MALFORMED, XDP_DROP);
	if (bpf_xdp_adjust_tail(ctx, (int)(l3off + ip_len + sizeof(t)) - (int)(data_end - data)))
		return verdict(ctx, cfg, f, R_DROP_UNCHALLENGEABLE, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end || l3off > MAX_L3_OFF)
		return XDP_DROP;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	t.th.source = f->dport;
	t.th.dest = f->sport;
	t.th.seq = bpf_htonl(seq);
	t.th.ack_seq = bpf_htonl(ack);
	t.th.doff = sizeof(t) / 4;
	t.th.syn = 1;
	t.th.ack = 1;
	t.th.window = bpf_htons(window);
	t.opt[0] = 2; /* MSS */
	t.opt[1] = 4;
	t.opt[2] = mss >> 8;
	t.opt[3] = mss & 0xff;
	sum = sum16(&t, sizeof(t) / 2) + bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(t));
	sum += sum16(&f->src, 8) + sum16(&f->dst, 8);

	/* Headers are built on the stack and copied in at a constant offset
	 * (one per VLAN depth): older verifiers (6.1) lose a packet range
	 * checked through a variable offset. */
#define PUT_AT(OFF, HDR)                                                    \
	do {                                                                \
		void *p = data + (OFF);                                     \
		if (p + sizeof(HDR) + sizeof(t) > data_end)                 \
			return XDP_DROP;                                    \
		__builtin_memcpy(p, &(HDR), sizeof(HDR));                   \
		__builtin_memcpy(p + sizeof(HDR), &t, sizeof(t));           \
	} while (0)
#define PUT(HDR)                                                            \
	do {                                                                \
		if (l3off == ETH_HLEN)                                      \
			PUT_AT(ETH_HLEN, HDR);                              \
		else if (l3off == ETH_HLEN + 4)                             \
			PUT_AT(ETH_HLEN + 4, HDR);                          \
		else if (l3off == ETH_HLEN + 8)                             \
			PUT_AT(ETH_HLEN + 8, HDR);                          \
		else                                                        \
			return XDP_DROP;                                    \
	} while (0)
	if (f->family == 4) {
		struct iphdr ip = {};
		/* The IPv4 pseudo header holds the 4-byte addresses: take the
		 * mapped prefix (0:0:0:0:0:ffff) back out of the sum. */
		sum -= 2 * bpf_htons(0xffff);
		ip.version = 4;
		ip.ihl = 5;
		ip.tot_len = bpf_htons(sizeof(ip) + sizeof(t));
		ip.frag_off = bpf_htons(0x4000); /* DF */
		ip.ttl = 64;
		ip.protocol = IPPROTO_TCP;
		__builtin_memcpy(&ip.saddr, &f->dst.b[12], 4);
		__builtin_memcpy(&ip.daddr, &f->src.b[12], 4);
		ip.check = csum_fold(sum16(&ip, sizeof(ip) / 2));
		t.th.check = csum_fold(sum);
		PUT(ip);
	} else {
		struct ipv6hdr ip6 = {};
		ip6.version = 6;
		ip6.payload_len = bpf_htons(sizeof(t));
		ip6.nexthdr = IPPROTO_TCP;
		ip6.hop_limit = 64;
		__builtin_memcpy(&ip6.saddr, &f->dst, 16);
		__builtin_memcpy(&ip6.daddr, &f->src, 16);
		t.th.check = csum_fold(sum);
		PUT(ip6);
	}
#undef PUT
#undef PUT_AT
	return verdict(ctx, cfg, f, reason, XDP_TX);
}

/* The kernel syncookie helpers read only the addresses, the ports, the
 * sequence numbers and doff, so they are fed headers built on the stack:
 * a fixed ISN of 0 makes the cookie depend on the 4-tuple and time only,
 * which is all the client's RST gives back. */
static __always_inline __s64 cookie_op(struct flow *f, int check, __u32 cookie)
{
	struct tcphdr th = { .source = f->sport, .dest = f->dport, .doff = 5 };
	if (check) {
		th.seq = bpf_htonl(1); /* the helper checks against seq - 1 = 0 */
		th.ack_seq = bpf_htonl(cookie + 1);
		th.ack = 1;
	} else {
		th.syn = 1;
	}
	if (f->family == 4) {
		struct iphdr ip = { .version = 4, .ihl = 5 };
		__builtin_memcpy(&ip.saddr, &f->src.b[12], 4);
		__builtin_memcpy(&ip.daddr, &f->dst.b[12], 4);
		return check ? bpf_tcp_raw_check_syncookie_ipv4(&ip, &th)
			     : bpf_tcp_raw_gen_syncookie_ipv4(&ip, &th, sizeof(th));
	}
	struct ipv6hdr ip6 = { .version = 6 };
	__builtin_memcpy(&ip6.saddr, &f->src, 16);
	__builtin_memcpy(&ip6.daddr, &f->dst, 16);
	return check ? bpf_tcp_raw_check_syncookie_ipv6(&ip6, &th)
		     : bpf_tcp_raw_gen_syncookie_ipv6(&ip6, &th, sizeof(th));
}

/* The cookie (low 32 bits) for a challenge to this flow, or < 0. */
static __always_inline __s64 cookie_make(struct flow *f)
{
	return cookie_op(f, 0, 0);
}

static __always_inline int cookie_valid(struct flow *f, __u32 cookie)
{
	return cookie_op(f, 1, cookie) == 0;
}

/* Take one SYN from a token bucket (milli-tokens, refilled at rate/s up to burst). */
static __always_inline int bucket_spend(struct guard_bucket *b, __u64 rate, __u64 burst, __u64 now)
{
	__u64 full = burst * 1000;
	__u64 elapsed = now - b->last_ns;
	if (elapsed > 10 * NSEC_PER_SEC)
		elapsed = 10 * NSEC_PER_SEC;
	/* rate SYN/s = rate milli-tokens per ms = rate / 1e6 milli-tokens per ns */
	__u64 tokens = b->milli_tokens + elapsed * rate / 1000000;
	if (tokens > full)
		tokens = full;
	b->last_ns = now;
	if (tokens < 1000) {
		b->milli_tokens = tokens;
		return 0;
	}
	b->milli_tokens = tokens - 1000;
	return 1;
}

static __always_inline int bucket_take(struct flow *f, struct guard_config *cfg, __u64 now)
{
	struct guard_bucket *b = bpf_map_lookup_elem(&src_buckets, &f->src);
	if (!b) {
		__u64 full = cfg->src_syn_burst * 1000;
		struct guard_bucket fresh = { .milli_tokens = full > 1000 ? full - 1000 : 0, .last_ns = now };
		bpf_map_update_elem(&src_buckets, &f->src, &fresh, BPF_ANY);
		return 1;
	}
	return bucket_spend(b, cfg->src_syn_rate, cfg->src_syn_burst, now);
}

/* Trust a source that passed a challenge.  A source still trusted keeps
 * what is left of its budget: passing again must not refill it. */
static __always_inline void verify_source(struct flow *f, struct guard_config *cfg, __u64 now)
{
	struct guard_verified *v = bpf_map_lookup_elem(&verified, &f->src);
	if (v && v->until_ns > now) {
		v->until_ns = now + cfg->verified_ttl_ns;
		return;
	}
	__u64 full = cfg->verified_syn_burst * 1000;
	struct guard_verified fresh = {
		.until_ns = now + cfg->verified_ttl_ns,
		.budget = { .milli_tokens = full, .last_ns = now },
	};
	bpf_map_update_elem(&verified, &f->src, &fresh, BPF_ANY);
}

/* Ages (in generations of 0.268 s) at which a copy is a retransmission:
 * from 3 to 12, about 0.8 s to 3.5 s after the copy before it.  That holds
 * an RTO of 1 s (RFC 6298) with room for a late timer or a slow path, a
 * second retransmission (2 s), and RFC 2988's 3 s.  A copy within 2
 * generations (0.8 s) is no timer: a replay, or a duplicate. */
#define RETX_EARLY_AGE 2
#define RETX_LAST_MATCH 12
#define RETX_GEN_MASK 0xfff /* 12 bits: an entry's generation wraps after 18 minutes */

enum retx_result { RETX_WAIT, RETX_EARLY_COPY, RETX_PASSED };

/* Look a SYN up among the entries of its block and remember it there.
 * An entry is (20-bit fingerprint << 12 | generation last seen); 0 is
 * empty.  A new SYN takes the first entry that is empty or too old to
 * match (else one its fingerprint picks).  No locking: a lost update costs
 * one more retransmission.  A global function, and no state carried
 * through the loop but one slot, so the verifier checks it once, quickly. */
__attribute__((noinline)) int retx_lookup(__u32 block, __u32 fp, __u32 gen)
{
	struct guard_retx_block *b = bpf_map_lookup_elem(&retx, &block);
	if (!b)
		return RETX_WAIT;
	__u32 entry = (fp << 12) | gen;
	__u32 slot = GUARD_RETX_WORDS;
	for (__u32 i = 0; i < GUARD_RETX_WORDS; i++) {
		__u32 e = b->w[i];
		__u32 age = (gen - e) & RETX_GEN_MASK;
		if (e && (e >> 12) == fp) {
			b->w[i] = entry; /* ages count from the latest copy */
			if (age <= RETX_EARLY_AGE)
				return RETX_EARLY_COPY;
			return age <= RETX_LAST_MATCH ? RETX_PASSED : RETX_WAIT;
		}
		if (slot == GUARD_RETX_WORDS && (!e || age > RETX_LAST_MATCH))
			slot = i;
	}
	if (slot == GUARD_RETX_WORDS)
		slot = fp; /* every entry may still match: overwrite one at random */
	b->w[slot & (GUARD_RETX_WORDS - 1)] = entry;
	return RETX_WAIT;
}

/* The SYN's hash names its block (top bits) and fingerprint (low bits). */
static __always_inline enum retx_result retx_check(struct flow *f, __u64 now)
{
	const __u32 *s = (const __u32 *)f->src.b;
	const __u32 *d = (const __u32 *)f->dst.b;
	__u64 h = 0x9E3779B97F4A7C15ULL;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		h = (h ^ s[i]) * 0xff51afd7ed558ccdULL;
		h ^= h >> 29;
		h = (h ^ d[i]) * 0xc4ceb9fe1a85ec53ULL;
		h ^= h >> 31;
	}
	h = (h ^ (((__u32)f->sport << 16) | f->dport)) * 0xff51afd7ed558ccdULL;
	h ^= h >> 29;
	h = (h ^ f->tcp_seq) * 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 32;
	__u32 fp = h & 0xfffff;
	__u32 gen = (now >> GUARD_RETX_GEN_SHIFT) & RETX_GEN_MASK;
	return retx_lookup(h >> (64 - GUARD_RETX_BLOCK_BITS), fp ? fp : 1, gen);
}

/* Count the SYN against its VIP and say whether the VIP is under attack. */
static __always_inline int vip_under_attack(__u32 index, struct guard_config *cfg, __u64 now)
{
	struct guard_vip_state *st = bpf_map_lookup_elem(&vip_state, &index);
	if (!st)
		return 0;
	__u64 age = now - st->window_start_ns;
	if (age >= NSEC_PER_SEC) {
		st->last_window_syns = age < 2 * NSEC_PER_SEC ? st->window_syns : 0;
		st->window_start_ns = now;
		st->window_syns = 0;
	}
	__u64 count = __sync_fetch_and_add(&st->window_syns, 1) + 1;
	if (cfg->attack_syn_rate && count > cfg->attack_syn_rate) {
		if (st->attack_until_ns < now)
			__sync_fetch_and_add(&st->attack_started, 1);
		st->attack_until_ns = now + cfg->attack_hold_ns;
	}
	return now < st->attack_until_ns;
}

static __always_inline int tcp_flags_valid(__u8 fl)
{
	if (!(fl & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK)))
		return 0; /* null scan, or PSH/URG alone */
	if ((fl & TCP_SYN) && (fl & (TCP_FIN | TCP_RST)))
		return 0;
	if ((fl & TCP_FIN) && (fl & TCP_RST))
		return 0;
	if ((fl & (TCP_FIN | TCP_PSH | TCP_URG)) && !(fl & TCP_ACK))
		return 0; /* FIN/PSH/URG always ride on an ACK (xmas scans do not) */
	return 1;
}

/* The filter test runs on the header's words before anything else is
 * built: it is all that traffic to the host itself pays. */
static __always_inline int maybe_vip(__u32 folded)
{
	__u32 zero = 0;
	struct guard_vip_filter *vf = bpf_map_lookup_elem(&vip_filter, &zero);
	if (!vf)
		return 1;
	__u32 h = (folded * GUARD_HASH_MUL) >> 16;
	return (vf->words[(h >> 6) & (GUARD_FILTER_BITS / 64 - 1)] >> (h & 63)) & 1;
}

static __always_inline int guard_flow(struct xdp_md *ctx, struct flow *f)
{
	__u32 zero = 0;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l4off = f->l4off;
	int truncated = l4off > 256;
	if (!truncated && f->fragment != 2 &&
	    (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP || f->proto == IPPROTO_SCTP)) {
		__be16 *ports = data + l4off;
		if ((void *)(ports + 2) > data_end) {
			truncated = 1;
		} else {
			f->sport = ports[0];
			f->dport = ports[1];
			if (f->proto == IPPROTO_TCP) {
				struct tcphdr *th = data + l4off;
				if ((void *)(th + 1) > data_end || th->doff < 5) {
					truncated = 1;
				} else {
					f->tcp_flags = ((__u8 *)th)[13];
					f->tcp_seq = bpf_ntohl(th->seq);
				}
			}
		}
	}

	/* The common case, a packet to a virtual server, needs one lookup:
	 * the service names its VIP's slot.  Anything else asks the VIP table. */
	__u32 *svc = NULL;
	struct guard_vip *vip = NULL;
	if (!truncated && f->fragment != 2 && f->dport) {
		struct guard_svc_key sk = { .addr = f->dst, .port = f->dport, .proto = f->proto };
		svc = bpf_map_lookup_elem(&services, &sk);
		if (!svc) {
			sk.port = 0;
			svc = bpf_map_lookup_elem(&services, &sk);
		}
	}
	if (!svc) {
		vip = bpf_map_lookup_elem(&vips, &f->dst);
		if (!vip)
			return verdict(ctx, NULL, NULL, R_PASS_NOT_VIP, XDP_PASS);
	}
	__u32 index = svc ? *svc : vip->index;
	struct guard_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	if (truncated)
		return verdict(ctx, cfg, f, R_DROP_MALFORMED, XDP_DROP);

	if (cfg->source_entries) {
		struct guard_lpm_key k = { .prefixlen = 128 };
		__builtin_memcpy(k.b, f->src.b, 16);
		__u32 *action = bpf_map_lookup_elem(&sources, &k);
		if (action) {
			if (*action == GUARD_LIST_ALLOW)
				return verdict(ctx, cfg, f, R_PASS_ALLOWLIST, XDP_PASS);
			if (*action == GUARD_LIST_TARPIT && f->proto == IPPROTO_TCP && !f->fragment &&
			    f->plain && (f->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
				return reply_synack(ctx, cfg, f, bpf_get_prandom_u32(), f->tcp_seq + 1, 0,
						    536, R_TX_TARPIT);
			return verdict(ctx, cfg, f, R_DROP_BLOCKLIST, XDP_DROP);
		}
	}

	if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6)
		/* echo to the VIP and the PMTU errors IPVS relays */
		return verdict(ctx, cfg, f, R_PASS_ICMP, XDP_PASS);
	if (f->fragment && f->proto == IPPROTO_TCP)
		/* TCP finds its MSS with PMTU discovery: a fragmented TCP
		 * segment to a VIP is an attack. */
		return verdict(ctx, cfg, f, R_DROP_FRAGMENT, XDP_DROP);
	if (!svc) {
		/* Later UDP/SCTP fragments carry no port to check; IPVS
		 * reassembles them for a VIP that serves the protocol. */
		__u32 bit = f->proto == IPPROTO_UDP ? GUARD_PROTO_UDP : f->proto == IPPROTO_SCTP ? GUARD_PROTO_SCTP : 0;
		if (f->fragment == 2 && vip && (vip->protos & bit))
			return verdict(ctx, cfg, f, R_PASS_VIP, XDP_PASS);
		return verdict(ctx, cfg, f, R_DROP_NO_SERVICE, XDP_DROP);
	}
	if (f->proto != IPPROTO_TCP)
		return verdict(ctx, cfg, f, R_PASS_VIP, XDP_PASS);

	__u8 fl = f->tcp_flags;
	if (!tcp_flags_valid(fl))
		return verdict(ctx, cfg, f, R_DROP_BAD_FLAGS, XDP_DROP);

	if ((fl & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		__u64 now = bpf_ktime_get_ns();
		if (cfg->src_syn_rate && !bucket_take(f, cfg, now))
			return verdict(ctx, cfg, f, R_DROP_SRC_RATE, XDP_DROP);
		if (!vip_under_attack(index, cfg, now) || !(cfg->flags & GUARD_F_CHALLENGE))
			return verdict(ctx, cfg, f, R_PASS_SYN, XDP_PASS);
		struct guard_verified *v = bpf_map_lookup_elem(&verified, &f->src);
		if (v && v->until_ns > now) {
			/* No test lets a source past its budget: a real host can pass
			 * any test, and a spoofed one only needs to pass it once. */
			if (cfg->verified_syn_rate &&
			    !bucket_spend(&v->budget, cfg->verified_syn_rate, cfg->verified_syn_burst, now))
				return verdict(ctx, cfg, f, R_DROP_OVER_BUDGET, XDP_DROP);
			return verdict(ctx, cfg, f, R_PASS_VERIFIED, XDP_PASS);
		}
		if (!(cfg->flags & GUARD_F_RST_COOKIE)) {
			enum retx_result r = retx_check(f, now);
			if (r == RETX_PASSED) {
				verify_source(f, cfg, now);
				return verdict(ctx, cfg, f, R_PASS_RETX, XDP_PASS);
			}
			return verdict(ctx, cfg, f, r == RETX_EARLY_COPY ? R_DROP_RETX_EARLY : R_DROP_RETX_WAIT,
				       XDP_DROP);
		}
		if (!f->plain)
			return verdict(ctx, cfg, f, R_DROP_UNCHALLENGEABLE, XDP_DROP);
		__s64 cookie = cookie_make(f);
		if (cookie < 0)
			return verdict(ctx, cfg, f, R_DROP_UNCHALLENGEABLE, XDP_DROP);
		/* One ISN in 2^32 would make the challenge acceptable to the
		 * client; it then retries after its RTO like any other. */
		return reply_synack(ctx, cfg, f, bpf_get_prandom_u32(), (__u32)cookie, 65535,
				    f->family == 4 ? 1460 : 1440, R_TX_CHALLENGE);
	}

	if ((fl & (TCP_RST | TCP_ACK)) == TCP_RST && (cfg->flags & GUARD_F_CHALLENGE) &&
	    (cfg->flags & GUARD_F_RST_COOKIE) && f->plain) {
		struct guard_vip_state *st = bpf_map_lookup_elem(&vip_state, &index);
		__u64 now = bpf_ktime_get_ns();
		/* Only near an attack: outside one no challenge is pending. */
		if (st && st->attack_until_ns + COOKIE_WINDOW_NS > now && cookie_valid(f, f->tcp_seq)) {
			verify_source(f, cfg, now);
			return verdict(ctx, cfg, f, R_DROP_CHALLENGE_PASSED, XDP_DROP);
		}
	}
	return verdict(ctx, cfg, f, R_PASS_VIP, XDP_PASS);
}

static __always_inline int guard_ipv4(struct xdp_md *ctx, __u32 l3off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip;
	struct flow f = {};

	if (l3off > MAX_L3_OFF)
		return XDP_PASS;
	ip = data + l3off;
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return verdict(ctx, NULL, NULL, R_PASS_NOT_VIP, XDP_PASS);
	/* the mapped form's third word, ::ffff:0:0/96, read in host order */
	const __u8 mapped[4] = { 0, 0, 0xff, 0xff };
	if (!maybe_vip(*(__u32 *)mapped ^ ip->daddr))
		return verdict(ctx, NULL, NULL, R_PASS_NOT_VIP, XDP_PASS);
	f.family = 4;
	f.l3off = l3off;
	f.l4off = l3off + ip->ihl * 4;
	f.proto = ip->protocol;
	f.plain = ip->ihl == 5;
	f.src.b[10] = 0xff;
	f.src.b[11] = 0xff;
	__builtin_memcpy(&f.src.b[12], &ip->saddr, 4);
	f.dst.b[10] = 0xff;
	f.dst.b[11] = 0xff;
	__builtin_memcpy(&f.dst.b[12], &ip->daddr, 4);
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff)
		f.fragment = 2;
	else if (frag & 0x2000)
		f.fragment = 1;
	return guard_flow(ctx, &f);
}

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

static __always_inline int guard_ipv6(struct xdp_md *ctx, __u32 l3off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6;
	struct flow f = {};

	if (l3off > MAX_L3_OFF)
		return XDP_PASS;
	ip6 = data + l3off;
	if ((void *)(ip6 + 1) > data_end)
		return verdict(ctx, NULL, NULL, R_PASS_NOT_VIP, XDP_PASS);
	__u32 *d = ip6->daddr.in6_u.u6_addr32;
	if (!maybe_vip(d[0] ^ d[1] ^ d[2] ^ d[3]))
		return verdict(ctx, NULL, NULL, R_PASS_NOT_VIP, XDP_PASS);
	f.family = 6;
	f.l3off = l3off;
	__builtin_memcpy(&f.src, &ip6->saddr, 16);
	__builtin_memcpy(&f.dst, &ip6->daddr, 16);
	f.plain = 1;
	__u8 next = ip6->nexthdr;
	__u32 off = l3off + sizeof(*ip6);
	/* Walk a bounded number of extension headers. */
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_FRAGMENT)
			break;
		f.plain = 0;
		if (off > 200)
			break;
		__u8 *h = data + off;
		if ((void *)(h + 8) > data_end)
			break;
		if (next == IPPROTO_FRAGMENT) {
			struct ipv6_frag *fh = (void *)h;
			__u16 fo = bpf_ntohs(fh->frag_off);
			f.fragment = (fo & 0xfff8) ? 2 : (fo & 1) ? 1 : 0;
			next = fh->nexthdr;
			off += 8;
		} else {
			next = h[0];
			off += (h[1] + 1) * 8;
		}
	}
	f.proto = next;
	f.l4off = off;
	return guard_flow(ctx, &f);
}

SEC("xdp")
int xdp_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return verdict(ctx, NULL, NULL, R_PASS_NOT_IP, XDP_PASS);
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return verdict(ctx, NULL, NULL, R_PASS_NOT_IP, XDP_PASS);
		proto = vh->proto;
		off += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_IP))
		return guard_ipv4(ctx, off);
	if (proto == bpf_htons(ETH_P_IPV6))
		return guard_ipv6(ctx, off);
	return verdict(ctx, NULL, NULL, R_PASS_NOT_IP, XDP_PASS);
}

/* The baseline of the benchmark: the cheapest possible program. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
