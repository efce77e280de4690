/* Shared definitions for the xvs BPF programs: map definitions in the legacy
 * "maps" section, which xvs-xdp's own loader reads (no BTF needed). */
#ifndef XVS_COMMON_H
#define XVS_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Layout read by crates/xvs-xdp/src/bpf/elf.rs. */
struct xvs_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

#define XVS_MAP(name, t, k, v, n) XVS_MAP_F(name, t, k, v, n, 0)

#define XVS_MAP_F(name, t, k, v, n, f) \
	struct xvs_map_def name SEC("maps") = { \
		.type = (t), .key_size = sizeof(k), .value_size = sizeof(v), .max_entries = (n), \
		.map_flags = (f), \
	}

#endif
