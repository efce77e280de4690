/* Body of the "does xvs own this frame" classifier; included by steer.c with
 * CLS_NAME, CLS_CTX and CLS_LOAD defined. Parses Ethernet (+ one VLAN tag),
 * IPv4/IPv6 (+ an IPv6 fragment header), TCP/UDP and ICMP errors. */

static __always_inline int CLS_NAME(CLS_CTX *ctx)
{
	struct steer_key k = {};
	__u8 eth[14];
	__u16 proto;
	__u32 off = 14;
	__u8 l4;
	int frag_later = 0;

	if (CLS_LOAD(ctx, 0, eth, 14))
		return 0;
	proto = (eth[12] << 8) | eth[13];
	if (proto == 0x8100 || proto == 0x88a8) {
		__u8 tag[4];
		if (CLS_LOAD(ctx, 14, tag, 4))
			return 0;
		proto = (tag[2] << 8) | tag[3];
		off = 18;
	}

	__u8 src[16] = {}, dst[16] = {};
	if (proto == 0x0800) {
		__u8 ip[20];
		if (CLS_LOAD(ctx, off, ip, 20))
			return 0;
		if ((ip[0] >> 4) != 4)
			return 0;
		__u32 ihl = (ip[0] & 0xf) * 4;
		if (ihl < 20)
			return 0;
		src[10] = 0xff; src[11] = 0xff;
		dst[10] = 0xff; dst[11] = 0xff;
		__builtin_memcpy(&src[12], &ip[12], 4);
		__builtin_memcpy(&dst[12], &ip[16], 4);
		l4 = ip[9];
		frag_later = ((ip[6] & 0x1f) | ip[7]) != 0;
		off += ihl;
	} else if (proto == 0x86dd) {
		__u8 ip[40];
		if (CLS_LOAD(ctx, off, ip, 40))
			return 0;
		if ((ip[0] >> 4) != 6)
			return 0;
		__builtin_memcpy(src, &ip[8], 16);
		__builtin_memcpy(dst, &ip[24], 16);
		l4 = ip[6];
		off += 40;
		if (l4 == 44) { /* fragment header */
			__u8 fh[8];
			if (CLS_LOAD(ctx, off, fh, 8))
				return 0;
			l4 = fh[0];
			frag_later = ((fh[2] << 8) | (fh[3] & 0xf8)) != 0;
			off += 8;
		}
	} else {
		return 0;
	}

	/* ICMP errors (and later fragments) are owned by address only. */
	int addr_only = frag_later;
	if (!frag_later && (l4 == 1 || l4 == 58)) {
		__u8 type;
		if (CLS_LOAD(ctx, off, &type, 1))
			return 0;
		if (l4 == 1)
			addr_only = type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
		else
			addr_only = type >= 1 && type <= 4;
	}

	/* A FULLNAT local address owns its TCP/UDP traffic and the related ICMP
	 * errors; anything else (ARP/ND replies to it, pings) stays with the
	 * kernel, which uses the address to resolve neighbours. */
	if (addr_only || l4 == 6 || l4 == 17) {
		k.kind = K_LADDR;
		__builtin_memcpy(k.addr, dst, 16);
		if (bpf_map_lookup_elem(&xvs_keys, &k))
			return 1;
	}

	if (!frag_later && (l4 == 6 || l4 == 17)) {
		__u8 ports[4];
		if (CLS_LOAD(ctx, off, ports, 4))
			return 0;
		k.kind = K_VIP;
		k.proto = l4;
		__builtin_memcpy(&k.port, &ports[2], 2);
		if (bpf_map_lookup_elem(&xvs_keys, &k))
			return 1;
		k.kind = K_RS;
		__builtin_memcpy(&k.port, &ports[0], 2);
		__builtin_memcpy(k.addr, src, 16);
		if (bpf_map_lookup_elem(&xvs_keys, &k))
			return 1;
		return 0;
	}
	if (!addr_only)
		return 0;
	k.proto = 0;
	k.port = 0;
	k.kind = K_VIP_ADDR;
	__builtin_memcpy(k.addr, dst, 16);
	if (bpf_map_lookup_elem(&xvs_keys, &k))
		return 1;
	k.kind = K_RS_ADDR;
	__builtin_memcpy(k.addr, src, 16);
	if (bpf_map_lookup_elem(&xvs_keys, &k))
		return 1;
	return 0;
}
