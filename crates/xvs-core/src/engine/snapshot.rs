//! The immutable rule snapshot workers read: services by tuple, by fwmark and by
//! id, dests by id, FULLNAT local addresses, the fwmark table, timeouts and knobs.

use crate::addr::Addr;
use crate::conn::Timeouts;
use crate::service::{Af, Dest, ServiceKey};
use crate::service::{Service, ServiceTable};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Kernel sysctl equivalents (see shared/ipvs-semantics.md §4, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// 1: a packet for a conn whose dest was removed expires the conn and is
    /// rescheduled; 0: the packet is dropped.
    pub expire_nodest_conn: bool,
    /// 1: a template whose dest has weight 0 is not honoured.
    pub expire_quiescent_template: bool,
    /// What a SYN for a connection that seems to be over does (see
    /// [`ReuseMode`]).
    pub conn_reuse_mode: ReuseMode,
    /// 1: any TCP segment may create a connection, not only a SYN.
    pub sloppy_tcp: bool,
    /// 0 off, 1 automatic, 2 automatic and on, 3 always on: the secure TCP table.
    pub secure_tcp: u8,
    /// Same levels: every second, delete half-open and idle connections from
    /// 1/32 of the table (`ip_vs_random_dropentry`).
    pub drop_entry: u8,
    /// Same levels: drop a share of new-connection packets under pressure.
    pub drop_packet: u8,
    /// Rate for drop_packet in mode 3: one packet in `am_droprate` is dropped.
    pub am_droprate: u32,
    /// Memory pressure threshold: free connection entries below this count as
    /// "low memory" for the automatic modes (the kernel's amemthresh, in entries).
    pub amemthresh: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            conn_reuse_mode: ReuseMode::DEFAULT,
            sloppy_tcp: false,
            secure_tcp: 0,
            drop_entry: 0,
            drop_packet: 0,
            am_droprate: 10,
            amemthresh: 1024,
        }
    }
}

/// The `conn_reuse_mode` sysctl: whether a SYN that reuses the ports of a
/// connection the director still has expires that connection and is
/// scheduled afresh (the kernel's `is_new_conn_expected`), for one not
/// controlled by a template and in TIME_WAIT or CLOSE; with bit 1 also in
/// FIN_WAIT with no reply seen (the last state DR sees). Any non-zero value
/// turns it on, as in the kernel; the value is kept as given, for listings
/// (an int in the kernel; xvs takes 0..=i32::MAX, `xvs_ctl::knobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ReuseMode(pub u32);

impl ReuseMode {
    /// 0: a SYN follows the old connection to its dest.
    pub const OFF: ReuseMode = ReuseMode(0);
    /// 1, the kernel's default: TIME_WAIT and CLOSE connections make way.
    pub const DEFAULT: ReuseMode = ReuseMode(1);

    /// Whether a new connection may replace an old one at all.
    #[inline]
    pub fn is_on(self) -> bool {
        self.0 != 0
    }

    /// Bit 1: FIN_WAIT connections with no reply seen make way too.
    #[inline]
    pub fn fin_wait(self) -> bool {
        self.0 & 2 != 0
    }
}

/// A fwmark classification rule: packets matching it belong to fwmark services
/// with `mark` (XDP sees no skb mark, so xvs assigns marks itself).
///
/// The rule model shared with the steering program (bpf/steer.c): rules are
/// tried in order and the first match gives the packet its mark, as a chain of
/// iptables `-j MARK --set-mark` rules each followed by `ACCEPT` would.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRule {
    /// IP protocol (6/17), or None for both.
    #[serde(default)]
    pub proto: Option<u8>,
    /// Destination prefix.
    pub addr: IpAddr,
    /// Length of the destination prefix.
    pub prefix_len: u8,
    /// Inclusive destination port range.
    #[serde(default = "all_ports")]
    pub ports: (u16, u16),
    /// Optional source prefix (same family as `addr`).
    #[serde(default)]
    pub src: Option<IpAddr>,
    /// Length of the source prefix.
    #[serde(default)]
    pub src_prefix_len: u8,
    /// The mark given to matching packets.
    pub mark: u32,
}

fn all_ports() -> (u16, u16) {
    (0, 65535)
}

impl MarkRule {
    /// Whether the rule gives a packet `saddr -> daddr:dport` of `proto` its
    /// mark; `dport` None (a later fragment) matches any port range.
    pub fn matches(&self, proto: u8, saddr: &Addr, daddr: &Addr, dport: Option<u16>) -> bool {
        if self.proto.is_some_and(|p| p != proto) {
            return false;
        }
        if let Some(dport) = dport {
            if dport < self.ports.0 || dport > self.ports.1 {
                return false;
            }
        }
        if !in_prefix(&Addr::from(self.addr), self.prefix_len, daddr) {
            return false;
        }
        match self.src {
            Some(src) => in_prefix(&Addr::from(src), self.src_prefix_len, saddr),
            None => true,
        }
    }

    /// The destination prefix in the 128-bit space the steering program's
    /// trie uses (IPv4 mapped, so its length counts 96 more bits).
    pub fn dst_prefix(&self) -> (Addr, u8) {
        mapped_prefix(&Addr::from(self.addr), self.prefix_len)
    }

    /// The source prefix in the same space (length 0: any source).
    pub fn src_prefix(&self) -> (Addr, u8) {
        match self.src {
            Some(s) => mapped_prefix(&Addr::from(s), self.src_prefix_len),
            None => (Addr::UNSPECIFIED, 0),
        }
    }
}

/// `a`/`len` in the 128-bit space, host bits cleared.
fn mapped_prefix(a: &Addr, len: u8) -> (Addr, u8) {
    let bits = if a.is_v4() {
        96 + len.min(32) as usize
    } else {
        len.min(128) as usize
    };
    let mut o = a.0;
    for (i, b) in o.iter_mut().enumerate() {
        let keep = bits.saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    (Addr(o), bits as u8)
}

/// Whether `a` is in the prefix `p`/`len` of the same family.
fn in_prefix(p: &Addr, len: u8, a: &Addr) -> bool {
    if p.is_v4() != a.is_v4() {
        return false;
    }
    let (bits, off) = if p.is_v4() {
        (len.min(32) as usize, 96)
    } else {
        (len.min(128) as usize, 0)
    };
    prefix_eq(&p.0, &a.0, off + bits, off)
}

/// Whether `a` and `b` agree on bits `from..to` (bit 0 = MSB of byte 0).
fn prefix_eq(a: &[u8; 16], b: &[u8; 16], to: usize, from: usize) -> bool {
    (from..to).all(|i| (a[i / 8] ^ b[i / 8]) & (0x80 >> (i % 8)) == 0)
}

/// What the control plane hands to [`super::Engine::publish`].
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    /// Every service, as the service table holds them.
    pub services: Vec<Arc<Service>>,
    /// Every dest by id, including removed dests that connections still use.
    pub dests: Vec<(u32, Arc<Dest>)>,
    /// FULLNAT local addresses per service.
    pub laddrs: Vec<(ServiceKey, Vec<IpAddr>)>,
    /// The fwmark classification rules, in order.
    pub marks: Vec<MarkRule>,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// The sysctl equivalents.
    pub knobs: Knobs,
}

/// Rule maps are keyed by operator-chosen values, so fixed hash seeds are fine.
#[derive(Debug, Clone, Default)]
struct Seeded;

impl std::hash::BuildHasher for Seeded {
    type Hasher = ahash::AHasher;
    fn build_hasher(&self) -> ahash::AHasher {
        ahash::RandomState::with_seeds(0x5eed, 0xa11, 0xce, 0x1b).build_hasher()
    }
}

impl RuleSet {
    /// The services and dests of a service table (other fields at their defaults).
    pub fn from_table(table: &ServiceTable) -> RuleSet {
        RuleSet {
            services: table.services().to_vec(),
            dests: table.all_dests().map(|(id, d)| (id, d.clone())).collect(),
            ..Default::default()
        }
    }
}

type Map<K, V> = HashMap<K, V, Seeded>;

/// The rules as workers use them.
#[derive(Debug)]
pub struct Snapshot {
    /// Changes with every published rule set.
    pub generation: u64,
    by_tuple: Map<(u8, Addr, u16), Arc<Service>>,
    by_fwmark: Map<(u32, Af), Arc<Service>>,
    by_id: Vec<Option<Arc<Service>>>,
    dests: Vec<Option<Arc<Dest>>>,
    /// FULLNAT local address ids per service id.
    lips: Vec<Vec<u16>>,
    marks: Vec<MarkRule>,
    /// Connection timeouts in force.
    pub timeouts: Timeouts,
    /// The sysctl equivalents in force.
    pub knobs: Knobs,
}

impl Snapshot {
    /// A snapshot with no service (`max_services` ids).
    pub fn empty(max_services: usize) -> Snapshot {
        Snapshot {
            generation: 0,
            by_tuple: Map::default(),
            by_fwmark: Map::default(),
            by_id: vec![None; max_services],
            dests: Vec::new(),
            lips: vec![Vec::new(); max_services],
            marks: Vec::new(),
            timeouts: Timeouts::default(),
            knobs: Knobs::default(),
        }
    }

    /// The snapshot of `r`; `lip_ids` gives the id of each local address.
    pub(crate) fn build(
        r: &RuleSet,
        generation: u64,
        lip_ids: &HashMap<Addr, u16>,
        max_services: usize,
    ) -> Snapshot {
        let mut s = Snapshot::empty(max_services);
        s.generation = generation;
        s.timeouts = r.timeouts;
        s.knobs = r.knobs;
        s.marks = r.marks.clone();
        for svc in &r.services {
            match svc.spec.key {
                ServiceKey::Addr { proto, addr, port } => {
                    s.by_tuple
                        .insert((proto.number(), Addr::from(addr), port), svc.clone());
                }
                ServiceKey::Fwmark { mark, af } => {
                    s.by_fwmark.insert((mark, af), svc.clone());
                }
            }
            if let Some(slot) = s.by_id.get_mut(svc.id as usize) {
                *slot = Some(svc.clone());
            }
        }
        for (key, addrs) in &r.laddrs {
            let Some(svc) = r.services.iter().find(|s| s.spec.key == *key) else {
                continue;
            };
            let ids = addrs
                .iter()
                .filter_map(|a| lip_ids.get(&Addr::from(*a)).copied())
                .collect();
            if let Some(slot) = s.lips.get_mut(svc.id as usize) {
                *slot = ids;
            }
        }
        let max_id = r.dests.iter().map(|(id, _)| *id as usize + 1).max();
        s.dests = vec![None; max_id.unwrap_or(0)];
        for (id, d) in &r.dests {
            s.dests[*id as usize] = Some(d.clone());
        }
        s
    }

    /// The service a new packet belongs to, as `ip_vs_service_find` looks:
    /// the fwmark service of the packet's mark (the first mark rule it
    /// matches), then (proto, daddr, dport), then a port-0 service on the
    /// address.
    #[inline]
    pub fn service_for(
        &self,
        proto: u8,
        saddr: &Addr,
        daddr: &Addr,
        dport: u16,
    ) -> Option<&Arc<Service>> {
        if let Some(mark) = self.mark_of(proto, saddr, daddr, Some(dport)) {
            let af = if daddr.is_v4() { Af::V4 } else { Af::V6 };
            if let Some(s) = self.by_fwmark.get(&(mark, af)) {
                return Some(s);
            }
        }
        if let Some(s) = self.by_tuple.get(&(proto, *daddr, dport)) {
            return Some(s);
        }
        self.by_tuple.get(&(proto, *daddr, 0))
    }

    /// The mark the mark rules give a packet (first match), if any.
    #[inline]
    pub fn mark_of(
        &self,
        proto: u8,
        saddr: &Addr,
        daddr: &Addr,
        dport: Option<u16>,
    ) -> Option<u32> {
        if self.marks.is_empty() {
            return None;
        }
        self.marks
            .iter()
            .find(|m| m.matches(proto, saddr, daddr, dport))
            .map(|m| m.mark)
    }

    /// The service of (protocol, address, port), else the port-0 service of
    /// the address (`ip_vs_service_find` without the mark rules).
    pub fn service_at(&self, proto: u8, addr: &Addr, port: u16) -> Option<&Arc<Service>> {
        self.by_tuple
            .get(&(proto, *addr, port))
            .or_else(|| self.by_tuple.get(&(proto, *addr, 0)))
    }

    /// The fwmark service of `mark` for family `af`.
    pub fn service_of_mark(&self, mark: u32, af: Af) -> Option<&Arc<Service>> {
        self.by_fwmark.get(&(mark, af))
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_id.iter().flatten()
    }

    /// Service by id.
    #[inline]
    pub fn service(&self, id: u32) -> Option<&Arc<Service>> {
        self.by_id.get(id as usize).and_then(|s| s.as_ref())
    }

    /// Dest by id (also removed dests that connections still reference).
    #[inline]
    pub fn dest(&self, id: u32) -> Option<&Arc<Dest>> {
        self.dests.get(id as usize).and_then(|d| d.as_ref())
    }

    /// Every dest (removed ones that connections still use included) with its id.
    pub fn dest_ids(&self) -> impl Iterator<Item = (u32, &Arc<Dest>)> {
        self.dests
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_ref().map(|d| (i as u32, d)))
    }

    /// FULLNAT local address ids of service `id`.
    #[inline]
    pub fn lips(&self, id: u32) -> &[u16] {
        self.lips.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when any service exists (an empty snapshot passes nothing).
    pub fn has_services(&self) -> bool {
        !self.by_tuple.is_empty() || !self.by_fwmark.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_rules_match_prefix_proto_ports_and_source() {
        let a = |s: &str| Addr::from(s.parse::<IpAddr>().unwrap());
        let any = a("10.77.5.5");
        let r = MarkRule {
            proto: Some(6),
            addr: "10.77.0.0".parse().unwrap(),
            prefix_len: 24,
            ports: (80, 90),
            src: None,
            src_prefix_len: 0,
            mark: 5,
        };
        assert!(r.matches(6, &any, &a("10.77.0.9"), Some(85)));
        assert!(r.matches(6, &any, &a("10.77.0.9"), None), "later fragment");
        assert!(!r.matches(17, &any, &a("10.77.0.9"), Some(85)));
        assert!(!r.matches(6, &any, &a("10.77.1.9"), Some(85)));
        assert!(!r.matches(6, &any, &a("10.77.0.9"), Some(91)));
        assert!(!r.matches(6, &any, &a("fd77::9"), Some(85)));
        let r6 = MarkRule {
            proto: None,
            addr: "fd77::".parse().unwrap(),
            prefix_len: 64,
            ports: (0, 65535),
            src: Some("fd77:1::".parse().unwrap()),
            src_prefix_len: 32,
            mark: 6,
        };
        assert!(r6.matches(17, &a("fd77:1::2"), &a("fd77::1:2"), Some(53)));
        assert!(!r6.matches(17, &a("fd77:2::2"), &a("fd77::1:2"), Some(53)));
        assert!(!r6.matches(17, &a("fd77:1::2"), &a("fd78::1"), Some(53)));
        assert_eq!(r.dst_prefix(), (a("10.77.0.0"), 120));
        assert_eq!(r6.src_prefix(), (a("fd77:1::"), 32));
    }
}
