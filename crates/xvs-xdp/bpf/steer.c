/* xvs steering: send to userspace only the frames xvs owns.
 *
 * Three programs share one classifier and one key map:
 *   xdp          - redirects owned frames into the AF_XDP socket of their RX queue;
 *   socket       - socket filter for the AF_PACKET backend: owned frames only;
 *   tcx/ingress  - drops owned frames in the kernel's ingress path when the
 *                  AF_PACKET backend handles them (packet taps run before tc ingress).
 * None of them takes a frame addressed to another host's MAC (unicast, not the
 * interface's own): the kernel would drop it as PACKET_OTHERHOST, so it is
 * left to the kernel untouched (and counted, ST_OTHERHOST).
 *
 * Key kinds (must match src/steer.rs):
 *   1 VIP       dst addr + dst port + proto
 *   2 LADDR     dst addr (FULLNAT local address: TCP/UDP, ICMP errors)
 *   3 RS        src addr + src port + proto (NAT replies)
 *   4 VIP_ADDR  dst addr, for later fragments
 *   5 RS_ADDR   src addr, for later fragments
 *   6 LOCAL     one of the host's own addresses (NAT replies to it are the host's)
 *   7 MARK      a mark with a fwmark service: proto = family (4/6), addr[0..4] = mark
 * A VIP or RS key with port 0 stands for every port (port-0 services, and the
 * real servers of port-0 and fwmark services).
 *
 * fwmark classification (XDP runs before netfilter: xvs assigns marks itself):
 * an LPM trie maps a destination prefix to a group of rules, each {protocol,
 * destination port range, optional source prefix, mark}; the group of the
 * longest prefix holds, in rule order, every rule whose prefix contains it, so
 * the first match there is the first matching rule overall (the engine's
 * MarkTable gives the same answer). Two tries and two halves of the group
 * array take turns: userspace fills the idle pair, then flips xvs_mark_cur.
 */
#include "common.h"

#define K_VIP 1
#define K_LADDR 2
#define K_RS 3
#define K_VIP_ADDR 4
#define K_RS_ADDR 5
#define K_LOCAL 6
#define K_MARK 7

#define MARK_GROUP_RULES 16
#define MARK_GROUPS 512

struct steer_key {
	__u8 kind;
	__u8 proto;
	__u16 port; /* network order */
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

XVS_MAP(xvs_keys, BPF_MAP_TYPE_HASH, struct steer_key, __u32, 65536);

struct mark_rule {
	__u8 proto; /* 0 = TCP and UDP */
	__u8 family; /* 4 or 6 */
	__u8 src_len; /* source prefix length in the 128-bit space; 0 = any */
	__u8 pad;
	__u16 lo, hi; /* destination ports, host order, inclusive */
	__u32 mark;
	__u8 src[16];
};

struct mark_group {
	__u32 n;
	__u32 pad;
	struct mark_rule r[MARK_GROUP_RULES];
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct mark_cur {
	__u32 set; /* which trie and half of the groups are live */
	__u32 rules; /* 0: no mark rules, skip the lookups */
};

XVS_MAP_F(xvs_mark_lpm0, BPF_MAP_TYPE_LPM_TRIE, struct lpm_key, __u32, MARK_GROUPS, BPF_F_NO_PREALLOC);
XVS_MAP_F(xvs_mark_lpm1, BPF_MAP_TYPE_LPM_TRIE, struct lpm_key, __u32, MARK_GROUPS, BPF_F_NO_PREALLOC);
XVS_MAP(xvs_mark_groups, BPF_MAP_TYPE_ARRAY, __u32, struct mark_group, 2 * MARK_GROUPS);
XVS_MAP(xvs_mark_cur, BPF_MAP_TYPE_ARRAY, __u32, struct mark_cur, 1);
/* Replaced per interface by the loader; one slot per RX queue. */
XVS_MAP(xvs_xsks, BPF_MAP_TYPE_XSKMAP, __u32, __u32, 256);
/* 0 redirected, 1 passed, 2 redirect failed (no socket on the queue),
 * 3 passed unlooked-at: addressed to another host's MAC. */
XVS_MAP(xvs_stats, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 4);

#define ST_REDIRECTED 0
#define ST_PASSED 1
#define ST_NOSOCK 2
#define ST_OTHERHOST 3

/* The receiving interface's own MAC address, as the first 4 and last 2 bytes
 * of the address in wire order (compared as raw memory); `known` 0: no MAC
 * to compare with (an interface without an Ethernet address), every frame is
 * looked at as before. Replaced per interface by the loader, which writes it
 * before attaching and again when the interface's address changes (layout:
 * src/iface.rs). */
struct if_mac {
	__u32 lo;
	__u16 hi;
	__u16 known;
};

XVS_MAP(xvs_ifmac, BPF_MAP_TYPE_ARRAY, __u32, struct if_mac, 1);

/* skb->pkt_type of a frame to another host's MAC (linux/if_packet.h). */
#define PACKET_OTHERHOST 3

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&xvs_stats, &idx);
	if (v)
		*v += 1;
}

/* The classifier, instantiated once for direct packet access (XDP) and once
 * for skb programs, which read through bpf_skb_load_bytes. */
#define CLS_NAME owned_xdp
#define CLS_CTX struct xdp_md
#define CLS_LOAD(ctx, off, dst, len) xdp_load(ctx, off, dst, len)
static __always_inline int xdp_load(struct xdp_md *ctx, __u32 off, void *dst, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* Bounds the offset for the verifier; headers never reach this far. */
	if (off > 4096)
		return -1;
	void *p = data + off;
	if (p + len > end)
		return -1;
	__builtin_memcpy(dst, p, len);
	return 0;
}
#include "classify.h"
#undef CLS_NAME
#undef CLS_CTX
#undef CLS_LOAD

#define CLS_NAME owned_skb
#define CLS_CTX struct __sk_buff
#define CLS_LOAD(ctx, off, dst, len) bpf_skb_load_bytes(ctx, off, dst, len)
#include "classify.h"

/* Whether the frame is addressed to another host: a unicast destination MAC
 * that is not the interface's own. The kernel (eth_type_trans) makes such a
 * frame PACKET_OTHERHOST and ip_rcv/ipv6_rcv drop it; it reaches XDP anyway
 * on interfaces without a MAC filter (veth, bridge ports, promiscuous NICs).
 * Group addresses (I/G bit set: broadcast, multicast) are kept, as ip_rcv
 * keeps PACKET_BROADCAST and PACKET_MULTICAST frames (unless the
 * drop_unicast_in_l2_multicast sysctl, 0 by default). */
static __always_inline int other_host(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 6 > end)
		return 0;
	__u8 *dst = data;
	if (dst[0] & 1)
		return 0;
	__u32 zero = 0;
	struct if_mac *m = bpf_map_lookup_elem(&xvs_ifmac, &zero);
	if (!m || !m->known)
		return 0;
	/* Two loads, not six: packet loads need no alignment here (the
	 * verifier checks it only on architectures that need it, where the
	 * frame starts aligned anyway). */
	return *(__u32 *)(void *)dst != m->lo || *(__u16 *)(void *)(dst + 4) != m->hi;
}

SEC("xdp")
int xvs_steer(struct xdp_md *ctx)
{
	if (other_host(ctx)) {
		count(ST_OTHERHOST);
		return XDP_PASS;
	}
	if (!owned_xdp(ctx)) {
		count(ST_PASSED);
		return XDP_PASS;
	}
	/* XDP_PASS as the fallback: with no socket on this queue the kernel keeps it. */
	long rc = bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	count(rc == XDP_REDIRECT ? ST_REDIRECTED : ST_NOSOCK);
	return rc;
}

/* The skb programs see the kernel's own verdict on the destination MAC. */
SEC("socket")
int xvs_sockfilter(struct __sk_buff *skb)
{
	return skb->pkt_type != PACKET_OTHERHOST && owned_skb(skb) ? skb->len : 0;
}

/* tcx return codes: -1 next program, 2 drop. */
SEC("tcx/ingress")
int xvs_guard(struct __sk_buff *skb)
{
	if (skb->pkt_type == PACKET_OTHERHOST) {
		count(ST_OTHERHOST);
		return -1;
	}
	if (owned_skb(skb)) {
		count(ST_REDIRECTED);
		return 2;
	}
	return -1;
}

char _license[] SEC("license") = "GPL";
