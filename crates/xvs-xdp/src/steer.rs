//! Steering keys: which frames xvs owns. They live in one BPF hash map shared
//! by the XDP program of every interface (and by the AF_PACKET filter and
//! guard), updated from the control plane.

use crate::bpf::elf::{Map, Object};
use crate::bpf::sys;
use crate::error::{os, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use xvs_core::addr::Addr;
use xvs_core::engine::MarkRule;
use xvs_core::wire::IpProtocol;

/// What xvs takes from the wire. IPv4 non-first fragments and ICMP errors are
/// owned when their outer destination is the address of a `Vip` or a
/// `LocalAddr`, or their outer source the address of a `RealServer` (the
/// program checks derived address-only keys that [`Steering`] maintains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteerKey {
    /// Frames to a virtual service: destination VIP:port/proto.
    Vip {
        addr: Addr,
        port: u16,
        proto: IpProtocol,
    },
    /// Frames to a FULLNAT local address, any protocol and port.
    LocalAddr(Addr),
    /// NAT replies: source = a real server's address:port/proto.
    RealServer {
        addr: Addr,
        port: u16,
        proto: IpProtocol,
    },
    /// One of the host's own addresses: NAT replies addressed to it belong to
    /// the host's own connections (health checks, an operator's curl), not to xvs.
    Local(Addr),
    /// A mark with a fwmark service of this family: frames the mark rules give
    /// it are xvs's.
    Mark { mark: u32, v6: bool },
}

// Key kinds, as in bpf/steer.c.
const K_VIP: u8 = 1;
const K_LADDR: u8 = 2;
const K_RS: u8 = 3;
const K_VIP_ADDR: u8 = 4;
const K_RS_ADDR: u8 = 5;
const K_LOCAL: u8 = 6;
const K_MARK: u8 = 7;

/// The map key: kind, proto, port (network order), address.
type RawKey = [u8; 20];

fn raw(kind: u8, proto: u8, port: u16, addr: &Addr) -> RawKey {
    let mut k = [0u8; 20];
    k[0] = kind;
    k[1] = proto;
    k[2..4].copy_from_slice(&port.to_be_bytes());
    k[4..].copy_from_slice(&addr.0);
    k
}

impl SteerKey {
    /// The map key, and the derived address-only key (for fragments and ICMP errors).
    fn raw(&self) -> (RawKey, Option<RawKey>) {
        match self {
            SteerKey::Vip { addr, port, proto } => (
                raw(K_VIP, proto.number(), *port, addr),
                Some(raw(K_VIP_ADDR, 0, 0, addr)),
            ),
            SteerKey::LocalAddr(addr) => (raw(K_LADDR, 0, 0, addr), None),
            SteerKey::Local(addr) => (raw(K_LOCAL, 0, 0, addr), None),
            SteerKey::Mark { mark, v6 } => {
                let mut a = [0u8; 16];
                // As the program copies the u32: native byte order.
                a[..4].copy_from_slice(&mark.to_ne_bytes());
                (raw(K_MARK, if *v6 { 6 } else { 4 }, 0, &Addr(a)), None)
            }
            SteerKey::RealServer { addr, port, proto } => (
                raw(K_RS, proto.number(), *port, addr),
                Some(raw(K_RS_ADDR, 0, 0, addr)),
            ),
        }
    }
}

/// The set of steering keys, shared by every interface xvs is attached to.
/// Cheap to clone (one map, reference counted).
#[derive(Clone)]
pub struct Steering {
    pub(crate) keys: Arc<Map>,
    marks: Arc<MarkMaps>,
    /// Reference counts of every key in the map (derived keys are shared by
    /// several primary keys).
    refs: Arc<Mutex<HashMap<RawKey, u32>>>,
}

/// The fwmark classification maps (see bpf/steer.c).
struct MarkMaps {
    lpm: [Arc<Map>; 2],
    groups: Arc<Map>,
    cur: Arc<Map>,
    live: Mutex<MarkState>,
}

#[derive(Default)]
struct MarkState {
    set: u32,
    rules: Vec<MarkRule>,
}

/// As in bpf/steer.c.
const MARK_GROUP_RULES: usize = 16;
const MARK_GROUPS: u32 = 512;
/// struct mark_rule: proto, family, src_len, pad, lo, hi, mark, src[16].
const MARK_RULE_BYTES: usize = 28;

/// A destination prefix (128-bit space) and the rules that apply to it.
type MarkGroup<'a> = ((Addr, u8), Vec<&'a MarkRule>);

/// The groups the programs' trie points at: for every destination prefix of
/// the rules, the rules (in order) whose prefix contains it, so that the
/// group of the longest prefix containing an address holds every rule that
/// can match it (prefixes containing one address are nested).
fn mark_groups(rules: &[MarkRule]) -> Result<Vec<MarkGroup<'_>>> {
    let mut prefixes: Vec<(Addr, u8)> = Vec::new();
    for r in rules {
        let p = r.dst_prefix();
        if !prefixes.contains(&p) {
            prefixes.push(p);
        }
    }
    if prefixes.len() > MARK_GROUPS as usize {
        return Err(crate::Error::MarkPrefixes {
            count: prefixes.len(),
            max: MARK_GROUPS,
        });
    }
    let contains = |outer: &(Addr, u8), inner: &(Addr, u8)| {
        outer.1 <= inner.1
            && (0..outer.1 as usize)
                .all(|i| (outer.0 .0[i / 8] ^ inner.0 .0[i / 8]) & (0x80 >> (i % 8)) == 0)
    };
    let mut out = Vec::new();
    for p in prefixes {
        let members: Vec<&MarkRule> = rules
            .iter()
            .filter(|r| r.addr.is_ipv4() == p.0.is_v4() && contains(&r.dst_prefix(), &p))
            .collect();
        if members.len() > MARK_GROUP_RULES {
            return Err(crate::Error::MarkOverlap {
                count: members.len(),
                prefix: p.0.to_ip(),
                len: if p.0.is_v4() { p.1 - 96 } else { p.1 },
                max: MARK_GROUP_RULES,
            });
        }
        out.push((p, members));
    }
    Ok(out)
}

fn group_bytes(members: &[&MarkRule]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + MARK_GROUP_RULES * MARK_RULE_BYTES];
    b[..4].copy_from_slice(&(members.len() as u32).to_ne_bytes());
    for (i, r) in members.iter().enumerate() {
        let e = &mut b[8 + i * MARK_RULE_BYTES..8 + (i + 1) * MARK_RULE_BYTES];
        e[0] = r.proto.unwrap_or(0);
        e[1] = if r.addr.is_ipv4() { 4 } else { 6 };
        let (src, src_len) = r.src_prefix();
        e[2] = src_len;
        e[4..6].copy_from_slice(&r.ports.0.to_ne_bytes());
        e[6..8].copy_from_slice(&r.ports.1.to_ne_bytes());
        e[8..12].copy_from_slice(&r.mark.to_ne_bytes());
        e[12..28].copy_from_slice(&src.0);
    }
    b
}

/// struct lpm_key: prefixlen (native u32), then the 16 address bytes.
fn lpm_key(p: &(Addr, u8)) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&(p.1 as u32).to_ne_bytes());
    k[4..].copy_from_slice(&p.0 .0);
    k
}

/// Deletes every key of a hash or trie map.
fn clear_map(m: &Map) -> Result<()> {
    let ks = m.def.key_size as usize;
    loop {
        let mut k = vec![0u8; ks];
        match m.next_key(None, &mut k) {
            Ok(()) => {
                m.delete(&k)
                    .map_err(|e| os(format!("clear map {}", m.def.name), e))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(os(format!("walk map {}", m.def.name), e)),
        }
    }
}

/// Size of the key map unless told otherwise.
pub const DEFAULT_KEYS: u32 = 65536;

impl Steering {
    /// Creates the (empty) key map with room for [`DEFAULT_KEYS`] keys.
    pub fn new() -> Result<Steering> {
        Self::with_capacity(DEFAULT_KEYS)
    }

    /// Creates the (empty) key map with room for `keys` keys (VIPs, local and
    /// real-server addresses and the address-only keys derived from them).
    pub fn with_capacity(keys: u32) -> Result<Steering> {
        let obj = Object::parse(crate::bpf::STEER_OBJ)?;
        let mut def = obj.map("xvs_keys")?.clone();
        def.max_entries = keys.max(1);
        let keys = Map::create(&def)?;
        let marks = Arc::new(MarkMaps {
            lpm: [
                Map::create(obj.map("xvs_mark_lpm0")?)?,
                Map::create(obj.map("xvs_mark_lpm1")?)?,
            ],
            groups: Map::create(obj.map("xvs_mark_groups")?)?,
            cur: Map::create(obj.map("xvs_mark_cur")?)?,
            live: Mutex::new(MarkState::default()),
        });
        Ok(Steering {
            keys,
            marks,
            refs: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The maps every steering program binds (keys and mark rules), for
    /// loading a program against them.
    pub fn maps(&self) -> Vec<&Arc<Map>> {
        let m = &self.marks;
        vec![&self.keys, &m.lpm[0], &m.lpm[1], &m.groups, &m.cur]
    }

    /// Replaces the mark rules the programs classify with, atomically for
    /// them: the idle trie and half of the group array are filled, then the
    /// live pair is switched. On failure the rules in force stay.
    pub fn set_marks(&self, rules: &[MarkRule]) -> Result<()> {
        let groups = mark_groups(rules)?;
        let m = &self.marks;
        let mut live = m.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.rules.as_slice() == rules {
            return Ok(());
        }
        let idle = 1 - live.set;
        let lpm = &m.lpm[idle as usize];
        clear_map(lpm)?;
        for (i, (prefix, members)) in groups.iter().enumerate() {
            let slot = idle * MARK_GROUPS + i as u32;
            m.groups
                .update(&slot.to_ne_bytes(), &group_bytes(members), sys::BPF_ANY)
                .map_err(|e| os("write a mark rule group", e))?;
            lpm.update(&lpm_key(prefix), &slot.to_ne_bytes(), sys::BPF_ANY)
                .map_err(|e| os(format!("add mark prefix {}/{}", prefix.0, prefix.1), e))?;
        }
        let mut cur = [0u8; 8];
        cur[..4].copy_from_slice(&idle.to_ne_bytes());
        cur[4..].copy_from_slice(&(rules.len() as u32).to_ne_bytes());
        m.cur
            .update(&0u32.to_ne_bytes(), &cur, sys::BPF_ANY)
            .map_err(|e| os("switch the mark rules", e))?;
        live.set = idle;
        live.rules = rules.to_vec();
        Ok(())
    }

    /// Starts steering `key` to xvs. Returns false if it was already there.
    /// On failure nothing changed.
    pub fn add(&self, key: SteerKey) -> Result<bool> {
        let (k, derived) = key.raw();
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        if refs.contains_key(&k) {
            return Ok(false);
        }
        self.put(&mut refs, &k, &key)?;
        if let Some(d) = derived {
            if let Err(e) = self.put(&mut refs, &d, &key) {
                let _ = self.drop_ref(&mut refs, &k, &key);
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Adds every key of `keys`, all or nothing: on the first failure the keys
    /// this call added are removed again and the error is returned.
    pub fn add_all<'a>(&self, keys: impl IntoIterator<Item = &'a SteerKey>) -> Result<usize> {
        let mut added = Vec::new();
        for k in keys {
            match self.add(*k) {
                Ok(true) => added.push(*k),
                Ok(false) => {}
                Err(e) => {
                    for a in added.iter().rev() {
                        if let Err(e2) = self.remove(*a) {
                            tracing::warn!(key = ?a, "undoing a steering key: {e2}");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(added.len())
    }

    /// Stops steering `key`. Returns false if it was not there. A key whose
    /// deletion fails stays recorded (it is still in the map).
    pub fn remove(&self, key: SteerKey) -> Result<bool> {
        let (k, derived) = key.raw();
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        if !refs.contains_key(&k) {
            return Ok(false);
        }
        self.drop_ref(&mut refs, &k, &key)?;
        if let Some(d) = derived {
            self.drop_ref(&mut refs, &d, &key)?;
        }
        Ok(true)
    }

    /// The key map, to load the steering programs against it in test runs
    /// ([`crate::bpf::testrun::TestObject`]).
    pub fn key_map(&self) -> Arc<Map> {
        Arc::clone(&self.keys)
    }

    /// Whether `key` is steered (as recorded; the map holds the same).
    pub fn contains(&self, key: &SteerKey) -> bool {
        let refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        refs.contains_key(&key.raw().0)
    }

    /// The keys currently steered.
    pub fn len(&self) -> usize {
        let refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        refs.keys()
            .filter(|k| matches!(k[0], K_VIP | K_LADDR | K_RS | K_LOCAL | K_MARK))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in the BPF map itself (primary and derived keys), read back
    /// from the kernel: what the program really sees.
    pub fn map_entries(&self) -> Result<usize> {
        let mut n = 0;
        let mut key: Option<RawKey> = None;
        loop {
            let mut next = [0u8; 20];
            match self.keys.next_key(key.as_ref().map(|k| &k[..]), &mut next) {
                Ok(()) => {
                    n += 1;
                    key = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(n),
                Err(e) => return Err(os("walk the steering map".to_string(), e)),
            }
        }
    }

    fn put(&self, refs: &mut HashMap<RawKey, u32>, k: &RawKey, key: &SteerKey) -> Result<()> {
        match refs.get_mut(k) {
            Some(n) => *n += 1,
            None => {
                // Recorded only once the kernel took it.
                self.keys
                    .update(k, &1u32.to_ne_bytes(), sys::BPF_ANY)
                    .map_err(|e| os(format!("add steering key {key:?}"), e))?;
                refs.insert(*k, 1);
            }
        }
        Ok(())
    }

    fn drop_ref(&self, refs: &mut HashMap<RawKey, u32>, k: &RawKey, key: &SteerKey) -> Result<()> {
        let Some(n) = refs.get_mut(k) else {
            return Ok(());
        };
        if *n > 1 {
            *n -= 1;
            return Ok(());
        }
        match self.keys.delete(k) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(os(format!("remove steering key {key:?}"), e)),
        }
        refs.remove(k);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_have_the_c_layout() {
        let k = SteerKey::Vip {
            addr: Addr::v4([10, 77, 0, 100]),
            port: 80,
            proto: IpProtocol::Tcp,
        };
        let (r, d) = k.raw();
        assert_eq!(&r[..4], &[K_VIP, 6, 0, 80]);
        assert_eq!(&r[4..], &Addr::v4([10, 77, 0, 100]).0);
        assert_eq!(d.unwrap()[..4], [K_VIP_ADDR, 0, 0, 0]);
        assert_eq!(SteerKey::LocalAddr(Addr::UNSPECIFIED).raw().1, None);
    }
}
