/* Body of the "does xvs own this frame" classifier; included by steer.c with
 * CLS_NAME, CLS_CTX and CLS_LOAD defined.
 *
 * The contract it shares with the engine's parser (xvs-core wire/parse.rs),
 * checked on one fixture table by crates/xvs-xdp/tests/classify.rs:
 *  - Ethernet with up to two VLAN tags (802.1Q 0x8100 or 802.1ad 0x88a8),
 *    then IPv4 (options allowed) or IPv6 (up to 8 extension headers:
 *    hop-by-hop, routing, fragment, AH, destination options);
 *  - TCP/UDP, unfragmented or a first fragment: owned when addressed to a
 *    virtual service (by VIP:port, VIP with port 0, or a mark the mark rules
 *    give it) or a FULLNAT local address, or when it is a NAT
 *    reply (source = a real server's address:port) that is not addressed to
 *    one of the host's own addresses (replies to the director's own
 *    connections, e.g. health checks, stay with the kernel);
 *  - later fragments (no ports): by the same rules on addresses alone;
 *  - ICMP/ICMPv6 errors: by the packet they quote, which went the other way:
 *    sent from a VIP:port or a local address, or to a NAT real server from an
 *    address that is not the host's;
 *  - everything else (ARP, ND, pings, the host's traffic) is the kernel's. */

#define CLS_CAT2(a, b) a##_##b
#define CLS_CAT(a, b) CLS_CAT2(a, b)
#define CLS_F(n) CLS_CAT(CLS_NAME, n)

static __always_inline int CLS_F(has)(struct steer_key *k, __u8 kind, __u8 proto, const __u8 *port,
				      const __u8 *addr)
{
	k->kind = kind;
	k->proto = proto;
	if (port)
		__builtin_memcpy(&k->port, port, 2);
	else
		k->port = 0;
	__builtin_memcpy(k->addr, addr, 16);
	return bpf_map_lookup_elem(&xvs_keys, k) != 0;
}

static __always_inline __u32 CLS_F(be32)(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

/* Whether `a` is in the prefix `p`/`len` (128-bit space, IPv4 mapped). */
static __always_inline int CLS_F(in_prefix)(const __u8 *a, const __u8 *p, __u32 len)
{
#pragma unroll
	for (int w = 0; w < 4; w++) {
		__u32 bits = len > 32 ? 32 : len;
		if (bits) {
			__u32 m = bits == 32 ? 0xffffffff : ~(0xffffffffu >> bits);
			if ((CLS_F(be32)(a + 4 * w) ^ CLS_F(be32)(p + 4 * w)) & m)
				return 0;
		}
		len -= bits;
	}
	return 1;
}

/* The mark the rules give a packet (0: none). `any_port` for later fragments,
 * which carry no port. */
static __always_inline __u32 CLS_F(mark)(__u8 proto, int v6, const __u8 *src, const __u8 *dst,
					 __u16 dport, int any_port)
{
	__u32 zero = 0;
	struct mark_cur *cur = bpf_map_lookup_elem(&xvs_mark_cur, &zero);
	if (!cur || !cur->rules)
		return 0;
	struct lpm_key key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, dst, 16);
	__u32 *g = cur->set ? bpf_map_lookup_elem(&xvs_mark_lpm1, &key) :
			      bpf_map_lookup_elem(&xvs_mark_lpm0, &key);
	if (!g)
		return 0;
	struct mark_group *grp = bpf_map_lookup_elem(&xvs_mark_groups, g);
	if (!grp)
		return 0;
	__u32 n = grp->n;
	__u8 family = v6 ? 6 : 4;
	for (int i = 0; i < MARK_GROUP_RULES; i++) {
		if (i >= n)
			break;
		struct mark_rule *r = &grp->r[i];
		if (r->family != family || (r->proto && r->proto != proto))
			continue;
		if (!any_port && (dport < r->lo || dport > r->hi))
			continue;
		if (r->src_len && !CLS_F(in_prefix)(src, r->src, r->src_len))
			continue;
		return r->mark;
	}
	return 0;
}

/* Whether a mark has a fwmark service of this family. */
static __always_inline int CLS_F(has_mark)(struct steer_key *k, __u32 mark, int v6)
{
	if (!mark)
		return 0;
	__u8 a[16] = {};
	__builtin_memcpy(a, &mark, 4);
	return CLS_F(has)(k, K_MARK, v6 ? 6 : 4, 0, a);
}

/* Whether xvs owns a TCP/UDP packet src:sport -> dst:dport: a virtual service
 * by mark, by address:port or by address with port 0 (ip_vs_service_find's
 * three ways; the engine tries them in that order), a FULLNAT local address,
 * or a NAT reply not addressed to the host. */
static __always_inline int CLS_F(owns)(struct steer_key *k, __u8 proto, int v6, const __u8 *src,
				       const __u8 *sport, const __u8 *dst, const __u8 *dport)
{
	/* A NULL port is port 0: every port. */
	if (CLS_F(has)(k, K_VIP, proto, dport, dst))
		return 1;
	if (CLS_F(has)(k, K_VIP, proto, 0, dst))
		return 1;
	if (CLS_F(has)(k, K_LADDR, 0, 0, dst))
		return 1;
	__u16 dp = ((__u16)dport[0] << 8) | dport[1];
	if (CLS_F(has_mark)(k, CLS_F(mark)(proto, v6, src, dst, dp, 0), v6))
		return 1;
	if (CLS_F(has)(k, K_RS, proto, sport, src) || CLS_F(has)(k, K_RS, proto, 0, src))
		return !CLS_F(has)(k, K_LOCAL, 0, 0, dst);
	return 0;
}

static __always_inline int CLS_F(is_ext6)(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60;
}

/* Walks the IPv6 extension headers from *off (next header *nh), as the parser
 * does: stops at a later fragment (*later = 1). Returns -1 when truncated or
 * when more than 8 extension headers follow each other. */
static __always_inline int CLS_F(walk6)(CLS_CTX *ctx, __u32 *off, __u8 *nh, int *later)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (!CLS_F(is_ext6)(*nh))
			return 0;
		__u8 h[8] = {};
		if (CLS_LOAD(ctx, *off, h, 8))
			return -1;
		__u32 len;
		if (*nh == 44) {
			len = 8;
			if ((((__u16)h[2] << 8) | h[3]) >> 3) {
				*later = 1;
				*nh = h[0];
				*off += 8;
				return 0;
			}
		} else if (*nh == 51) {
			len = ((__u32)h[1] + 2) * 4;
		} else {
			len = ((__u32)h[1] + 1) * 8;
		}
		*nh = h[0];
		*off += len;
	}
	return CLS_F(is_ext6)(*nh) ? -1 : 0;
}

/* The IP header at *off: addresses (IPv4 as ::ffff:a.b.c.d), protocol after
 * extension headers, later-fragment flag; *off moves to the L4 header. */
static __always_inline int CLS_F(ip)(CLS_CTX *ctx, int v6, __u32 *off, __u8 *src, __u8 *dst,
				     __u8 *l4, int *later)
{
	if (!v6) {
		__u8 ip[20];
		if (CLS_LOAD(ctx, *off, ip, 20))
			return -1;
		if ((ip[0] >> 4) != 4)
			return -1;
		__u32 ihl = (ip[0] & 0xf) * 4;
		if (ihl < 20)
			return -1;
		__builtin_memset(src, 0, 10);
		__builtin_memset(dst, 0, 10);
		src[10] = 0xff; src[11] = 0xff;
		dst[10] = 0xff; dst[11] = 0xff;
		__builtin_memcpy(&src[12], &ip[12], 4);
		__builtin_memcpy(&dst[12], &ip[16], 4);
		*l4 = ip[9];
		*later = ((ip[6] & 0x1f) | ip[7]) != 0;
		*off += ihl;
		return 0;
	}
	__u8 ip[40];
	if (CLS_LOAD(ctx, *off, ip, 40))
		return -1;
	if ((ip[0] >> 4) != 6)
		return -1;
	__builtin_memcpy(src, &ip[8], 16);
	__builtin_memcpy(dst, &ip[24], 16);
	*l4 = ip[6];
	*later = 0;
	*off += 40;
	return CLS_F(walk6)(ctx, off, l4, later);
}

static __always_inline int CLS_NAME(CLS_CTX *ctx)
{
	struct steer_key k = {};
	__u8 eth[14];
	__u16 proto;
	__u32 off = 14;

	if (CLS_LOAD(ctx, 0, eth, 14))
		return 0;
	proto = (eth[12] << 8) | eth[13];
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != 0x8100 && proto != 0x88a8)
			break;
		__u8 tag[4];
		if (CLS_LOAD(ctx, off, tag, 4))
			return 0;
		proto = (tag[2] << 8) | tag[3];
		off += 4;
	}
	if (proto != 0x0800 && proto != 0x86dd)
		return 0;
	int v6 = proto == 0x86dd;

	/* Initialised: the verifier rejects reads of registers the compiler
	 * leaves unset on paths it cannot rule out. */
	__u8 src[16] = {}, dst[16] = {};
	__u8 l4 = 0;
	int later = 0;
	if (CLS_F(ip)(ctx, v6, &off, src, dst, &l4, &later))
		return 0;

	if (later)
		return CLS_F(has)(&k, K_VIP_ADDR, 0, 0, dst) || CLS_F(has)(&k, K_LADDR, 0, 0, dst) ||
		       CLS_F(has_mark)(&k, CLS_F(mark)(l4, v6, src, dst, 0, 1), v6) ||
		       (CLS_F(has)(&k, K_RS_ADDR, 0, 0, src) && !CLS_F(has)(&k, K_LOCAL, 0, 0, dst));

	if (l4 == 6 || l4 == 17) {
		__u8 ports[4] = {};
		if (CLS_LOAD(ctx, off, ports, 4))
			return 0;
		return CLS_F(owns)(&k, l4, v6, src, &ports[0], dst, &ports[2]);
	}

	if (l4 != (v6 ? 58 : 1))
		return 0;
	__u8 type = 0;
	if (CLS_LOAD(ctx, off, &type, 1))
		return 0;
	if (v6 ? (type < 1 || type > 4) : !(type == 3 || type == 4 || type == 5 || type == 11 || type == 12))
		return 0;
	/* The quoted packet: same family, TCP/UDP, carrying its ports. */
	off += 8;
	__u8 qsrc[16] = {}, qdst[16] = {};
	__u8 ql4 = 0;
	int qlater = 0;
	if (CLS_F(ip)(ctx, v6, &off, qsrc, qdst, &ql4, &qlater))
		return 0;
	if (qlater || (ql4 != 6 && ql4 != 17))
		return 0;
	__u8 qports[4] = {};
	if (CLS_LOAD(ctx, off, qports, 4))
		return 0;
	/* It went qsrc -> qdst; the flow's own direction is the reverse. */
	return CLS_F(owns)(&k, ql4, v6, qdst, &qports[2], qsrc, &qports[0]);
}

#undef CLS_F
#undef CLS_CAT
#undef CLS_CAT2
