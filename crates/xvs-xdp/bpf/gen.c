/* xvs traffic generator: run with BPF_PROG_RUN + BPF_F_TEST_XDP_LIVE_FRAMES.
 *
 * Live-frame pages are recycled with whatever the stack wrote into them, so
 * every frame gets a complete Ethernet/IPv4/UDP-or-TCP header from the config
 * map. The payload is left as the template's zeros, which lets the L4
 * checksum cover the header only. Source address/port vary per frame over
 * src_addrs x src_ports flows. Optional rate limit (GCRA on
 * bpf_ktime_get_ns) and packet budget; frames beyond either are dropped.
 * Layout must match src/gen.rs. */
#include "common.h"

struct gen_cfg {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 saddr; /* network order, first source address */
	__u32 daddr; /* network order */
	__u16 sport; /* host order, first source port */
	__u16 dport; /* host order */
	__u32 src_addrs; /* >= 1 */
	__u32 src_ports; /* >= 1 */
	__u16 l4_len; /* UDP: header + payload; TCP: 20 */
	__u8 proto; /* 17 or 6 */
	__u8 tcp_flags;
	__u64 cost_ns; /* 1e9 / rate, 0 = unlimited */
	__u64 burst_ns;
	__u64 budget; /* 0 = unlimited */
};

struct gen_state {
	__u64 sent;
	__u64 dropped;
	__u64 next_ns;
	__u64 seq;
};

XVS_MAP(gen_cfg, BPF_MAP_TYPE_ARRAY, __u32, struct gen_cfg, 1);
XVS_MAP(gen_state, BPF_MAP_TYPE_ARRAY, __u32, struct gen_state, 1);

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s & 0xffff;
}

static __always_inline __u32 sum16(const __u16 *p, int n)
{
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += p[i];
	return s;
}

SEC("xdp")
int xvs_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct gen_cfg *c = bpf_map_lookup_elem(&gen_cfg, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&gen_state, &zero);
	if (!c || !st)
		return XDP_ABORTED;

	if (c->budget && st->sent >= c->budget) {
		st->dropped++;
		return XDP_DROP;
	}
	if (c->cost_ns) {
		__u64 now = bpf_ktime_get_ns();
		__u64 next = st->next_ns;
		if (next > now + c->burst_ns) {
			st->dropped++;
			return XDP_DROP;
		}
		if (next < now)
			next = now;
		st->next_ns = next + c->cost_ns;
	}

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	if (p + 14 + 20 + 20 > (__u8 *)end)
		return XDP_ABORTED;

	__u64 seq = st->seq++;
	__u32 addrs = c->src_addrs ? c->src_addrs : 1;
	__u32 ports = c->src_ports ? c->src_ports : 1;
	__u32 flow = (__u32)seq % (addrs * ports);
	__u32 saddr = bpf_htonl(bpf_ntohl(c->saddr) + flow / ports);
	__u16 sport = bpf_htons(c->sport + flow % ports);
	__u16 dport = bpf_htons(c->dport);
	__u16 l4_len = c->l4_len;

	__builtin_memcpy(p, c->dst_mac, 6);
	__builtin_memcpy(p + 6, c->src_mac, 6);
	p[12] = 0x08;
	p[13] = 0x00;

	__u16 *ip = (__u16 *)(p + 14);
	__u16 tot = bpf_htons(20 + l4_len);
	ip[0] = bpf_htons(0x4500);
	ip[1] = tot;
	ip[2] = bpf_htons((__u16)seq);
	ip[3] = bpf_htons(0x4000); /* DF */
	ip[4] = bpf_htons((64 << 8) | c->proto);
	ip[5] = 0;
	__builtin_memcpy(&ip[6], &saddr, 4);
	__builtin_memcpy(&ip[8], &c->daddr, 4);
	ip[5] = fold(sum16(ip, 10));

	/* Pseudo-header sum: addresses, protocol, L4 length. */
	__u32 ph = sum16(&ip[6], 4) + bpf_htons(c->proto) + bpf_htons(l4_len);
	__u16 *l4 = (__u16 *)(p + 34);
	l4[0] = sport;
	l4[1] = dport;
	if (c->proto == 6) {
		__u32 sq = bpf_htonl((__u32)seq);
		__builtin_memcpy(&l4[2], &sq, 4);
		__builtin_memcpy(&l4[4], &sq, 4);
		l4[6] = bpf_htons((5 << 12) | c->tcp_flags);
		l4[7] = 0xffff;
		l4[8] = 0;
		l4[9] = 0;
		l4[8] = fold(ph + sum16(l4, 10));
	} else {
		l4[2] = bpf_htons(l4_len);
		l4[3] = 0;
		__u16 cs = fold(ph + sum16(l4, 4));
		l4[3] = cs ? cs : 0xffff;
	}
	st->sent++;
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
