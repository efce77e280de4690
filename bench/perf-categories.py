#!/usr/bin/env python3
"""Sorts the samples of `xvs-bench run --perf DIR` profiles (perf record -C
<director core>, cpu-clock) into the director core's cost centres, per packet.

usage: bench/perf-categories.py FILE.data:PACKETS ...
PACKETS: frames forwarded during the profiled trial (load Mpps x 1e6 x secs).
A sample's period is in ns of CPU time; the first matching category wins.
"""
import subprocess, sys, re, collections
CATS = [
 ("engine (xvs-core: parse, lookup, schedule, rewrite)", lambda c,d,s: 'xvs_core' in s),
 ("xvsd worker loop in userspace (rings, batching, libc, vdso)", lambda c,d,s: c.startswith('xvsd') and d != '[kernel.kallsyms]'),
 ("wake-ups, sleeps, context switches (scheduler, poll(), IRQs, IPIs)", lambda c,d,s: re.search(r'finish_task_switch|schedule|try_to_wake|_raw_spin_unlock_irq|native_write_msr|poll|fdget|irqentry|syscall|hrtimer|ttwu|select_task|enqueue_task|dequeue|update_curr|pick_next|__smp_call|sched|idle|cpuidle|tick|switch_|entry_SYSCALL|pv_queued|_raw_spin_lock|native_safe_halt|sysvec|apic|call_function', s)),
 ("transmit: veth xmit, an skb per frame (for xvs: AF_XDP copy-mode TX)", lambda c,d,s: re.search(r'xsk_generic|__alloc_skb|skb|veth_xmit|enqueue_to_backlog|dev_hard_start|__dev_queue_xmit|kmem_cache|kfree|slab|netif_rx|xsk_destruct|sock_wfree|validate_xmit|sendto|sock_|__sys_sendto|xsk_sendmsg|xsk_tx|xskq', s)),
 ("receive: veth NAPI, XDP program (for xvs: the copy into the UMEM)", lambda c,d,s: re.search(r'veth_|xdp|xp_|xsk_rcv|__xsk|memcpy|page_pool|bpf_prog|napi|net_rx|process_backlog|bpf_|__pi_memcpy|memset|page|xsk', s)),
 ("kernel IP stack, conntrack, NAT (nft, ip_forward)", lambda c,d,s: re.search(r'nf_|ip_|nft_|conntrack|fib|ipv4|__netif|tcp|udp|csum|inet|neigh|dst_|rt_|l3mdev|ct_|hash|jhash|siphash|flow_dissect', s)),
]
def run(f, pkts):
    out = subprocess.run(["perf","report","-i",f,"--no-children","-g","none","--sort","comm,dso,sym","--stdio","-F","period,comm,dso,sym","--percent-limit","0"],capture_output=True,text=True).stdout
    tot=collections.Counter(); other=collections.Counter(); total=0
    for line in out.splitlines():
        if not line.strip() or line.startswith('#'): continue
        m=re.match(r'\s*(\d+)\s+(\S.*?)\s{2,}(\S.*?)\s{2,}\[(.)\]\s+(.*)$', line)
        if not m: continue
        p=int(m.group(1)); c=m.group(2).strip(); d=m.group(3).strip(); s=m.group(5).strip()
        total+=p
        for name,fn in CATS:
            if fn(c,d,s): tot[name]+=p; break
        else:
            tot['other']+=p; other[s]+=p
    return total, tot, other
if __name__=='__main__':
    for arg in sys.argv[1:]:
        f,pk=arg.split(':'); pk=float(pk)
        total,tot,other=run(f,pk)
        print(f"== {f}: {total/1e9:.2f} s CPU on the director core, {total/pk:.0f} ns/packet ({total/pk*2.1:.0f} cycles at 2.1 GHz)")
        for name,_ in CATS+[("other",None)]:
            if tot[name]: print(f"   {tot[name]/total*100:5.1f} %  {tot[name]/pk:7.0f} ns/pkt  {name}")
        print("   top other:", ", ".join(f"{s} {v/total*100:.1f}%" for s,v in other.most_common(6)))
