/* IPIP decapsulation for lab real servers (TUN mode).
 *
 * The build machines have no ipip/ip6_tunnel modules, so a lab RS cannot
 * decapsulate with tunl0/ip6tnl0. This program strips the outer IP header of
 * IPv4 protocol 4 (IPv4-in-IPv4) and 41 (IPv6-in-IPv4), and of IPv6
 * next-header 4 (IPv4-in-IPv6) and 41 (IPv6-in-IPv6) frames, fixes the
 * Ethernet type for the inner family, and hands the inner packet to the stack
 * (XDP_PASS), which delivers it to the VIP held on lo. Everything else passes
 * untouched. Attached by iproute2: `ip link set dev X xdp obj decap.o sec xdp`.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef IPPROTO_IPV6
#define IPPROTO_IPV6 41
#endif

/* Moves the Ethernet header `outer` bytes forward, over the outer IP header,
 * sets its type to the inner family and drops the bytes in front of it. */
static __always_inline int strip(struct xdp_md *ctx, __u32 outer, __u8 inner_proto)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ethhdr copy;

	if (data + sizeof(*eth) > end)
		return XDP_PASS;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	copy.h_proto = inner_proto == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	if (bpf_xdp_adjust_head(ctx, (int)outer))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if (data + sizeof(*eth) > end)
		return XDP_DROP; /* cannot happen: the inner header was there */
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return XDP_PASS;
}

SEC("xdp")
int xvs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if (data + sizeof(*eth) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + sizeof(*eth);
		__u32 ihl;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		if (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_IPV6)
			return XDP_PASS;
		/* Fragmented tunnel packets go to the stack, which drops them. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return XDP_PASS;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip) || data + sizeof(*eth) + ihl > end)
			return XDP_PASS;
		return strip(ctx, ihl, ip->protocol);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + sizeof(*eth);

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		/* Only a tunnel header right after the fixed header (no extension
		 * headers), which is what a director sends. */
		if (ip6->nexthdr != IPPROTO_IPIP && ip6->nexthdr != IPPROTO_IPV6)
			return XDP_PASS;
		return strip(ctx, sizeof(*ip6), ip6->nexthdr);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
