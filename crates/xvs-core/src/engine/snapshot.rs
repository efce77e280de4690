//! The immutable rule snapshot workers read: services by tuple, by fwmark and by
//! id, dests by id, FULLNAT local addresses, the fwmark table, timeouts and knobs.

use crate::addr::Addr;
use crate::conn::Timeouts;
use crate::service::table::{Service, ServiceTable};
use crate::service::{Af, Dest, ServiceKey};
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
    /// Bit 0: a SYN for a conn in TIME_WAIT/CLOSE expires it and reschedules.
    pub conn_reuse_mode: u8,
    /// 1: any TCP segment may create a connection, not only a SYN.
    pub sloppy_tcp: bool,
    /// 0 off, 1 automatic, 2 automatic and on, 3 always on: the secure TCP table.
    pub secure_tcp: u8,
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
            conn_reuse_mode: 1,
            sloppy_tcp: false,
            secure_tcp: 0,
            drop_packet: 0,
            am_droprate: 10,
            amemthresh: 1024,
        }
    }
}

/// A fwmark classification rule: packets matching it belong to fwmark services
/// with `mark` (XDP sees no skb mark, so xvs assigns marks itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarkRule {
    /// IP protocol (6/17), or None for both.
    pub proto: Option<u8>,
    /// Destination prefix.
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Inclusive destination port range.
    pub ports: (u16, u16),
    pub mark: u32,
}

impl MarkRule {
    fn matches(&self, proto: u8, daddr: &Addr, dport: u16) -> bool {
        if self.proto.is_some_and(|p| p != proto) {
            return false;
        }
        if dport < self.ports.0 || dport > self.ports.1 {
            return false;
        }
        let rule = Addr::from(self.addr);
        if rule.is_v4() != daddr.is_v4() {
            return false;
        }
        let (bits, off) = if rule.is_v4() {
            (self.prefix_len.min(32) as usize, 96)
        } else {
            (self.prefix_len.min(128) as usize, 0)
        };
        prefix_eq(&rule.0, &daddr.0, off + bits, off)
    }
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
    pub marks: Vec<MarkRule>,
    pub timeouts: Timeouts,
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
    pub generation: u64,
    by_tuple: Map<(u8, Addr, u16), Arc<Service>>,
    by_fwmark: Map<(u32, Af), Arc<Service>>,
    by_id: Vec<Option<Arc<Service>>>,
    dests: Vec<Option<Arc<Dest>>>,
    /// FULLNAT local address ids per service id.
    lips: Vec<Vec<u16>>,
    marks: Vec<MarkRule>,
    pub timeouts: Timeouts,
    pub knobs: Knobs,
}

impl Snapshot {
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

    /// The service a new packet belongs to: by (proto, daddr, dport), then a
    /// port-0 service on the address, then the fwmark table.
    #[inline]
    pub fn service_for(&self, proto: u8, daddr: &Addr, dport: u16) -> Option<&Arc<Service>> {
        if let Some(s) = self.by_tuple.get(&(proto, *daddr, dport)) {
            return Some(s);
        }
        if let Some(s) = self.by_tuple.get(&(proto, *daddr, 0)) {
            return Some(s);
        }
        if self.marks.is_empty() {
            return None;
        }
        let af = if daddr.is_v4() { Af::V4 } else { Af::V6 };
        self.marks
            .iter()
            .filter(|m| m.matches(proto, daddr, dport))
            .find_map(|m| self.by_fwmark.get(&(m.mark, af)))
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
    fn mark_rules_match_prefix_proto_and_ports() {
        let r = MarkRule {
            proto: Some(6),
            addr: "10.77.0.0".parse().unwrap(),
            prefix_len: 24,
            ports: (80, 90),
            mark: 5,
        };
        let a = |s: &str| Addr::from(s.parse::<IpAddr>().unwrap());
        assert!(r.matches(6, &a("10.77.0.9"), 85));
        assert!(!r.matches(17, &a("10.77.0.9"), 85));
        assert!(!r.matches(6, &a("10.77.1.9"), 85));
        assert!(!r.matches(6, &a("10.77.0.9"), 91));
        assert!(!r.matches(6, &a("fd77::9"), 85));
        let r6 = MarkRule {
            proto: None,
            addr: "fd77::".parse().unwrap(),
            prefix_len: 64,
            ports: (0, 65535),
            mark: 6,
        };
        assert!(r6.matches(17, &a("fd77::1:2"), 53));
        assert!(!r6.matches(17, &a("fd78::1"), 53));
    }
}
