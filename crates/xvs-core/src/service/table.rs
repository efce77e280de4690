//! The service table the control plane edits with ipvsadm's operations (`-A -E -D
//! -C -a -e -d`), validated as the kernel and ipvsadm validate them.
//!
//! The table has a single owner (the control plane). Every change builds new
//! [`Service`] values behind new `Arc`s; the engine reads immutable snapshots, so an
//! old `Arc<Service>` stays valid for a worker still holding it. Dests are shared
//! `Arc<Dest>`s whose counters live across snapshots.
//!
//! Like the kernel, a deleted dest (or every dest of a deleted service) is marked
//! unavailable and kept in a trash while connections may still use it; adding the
//! same address and port to the same service again revives it with its counters.
//! [`ServiceTable::purge_trash`] frees the trash dests nothing refers to any more.
//!
//! Differences from the kernel, by necessity or choice:
//! - [`ServiceTable::services`] lists services in insertion order (an edit keeps the
//!   place); the kernel lists them in hash-table order.
//! - Ids (small integers) index per-worker counter arrays; the kernel uses
//!   pointers. A dest id is freed only when its dest leaves the trash, so no
//!   connection carries it any more; it is reused lowest first. A service id is
//!   freed when the service is deleted, while its connections may still live
//!   and count on it, so service ids are reused oldest-freed first (never-used
//!   ids before any freed one): a freed id comes back only after every other
//!   free id has been used. [`Service::serial`] tells a new service from an old
//!   one with the same id; the engine starts a new object's counters at zero.
//! - An `-E` to a scheduler that refuses the dest list (mh with more dests than table
//!   slots) leaves the service unchanged; the kernel has already unbound the old
//!   scheduler at that point and leaves the service without one.
//! - Adding a dest beyond mh's table size is refused (EINVAL); the kernel adds it and
//!   silently keeps the stale table.

use super::dest::Dest;
use super::error::ServiceError;
use super::spec::{
    Af, DestSpec, FwdMethod, Protocol, ServiceKey, ServiceSpec, SvcFlags, MAX_WEIGHT,
};
use crate::sched::{new_scheduler_with, SchedInput, SchedParams, Scheduler};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

/// Default bound on services (service ids are below it).
pub const DEFAULT_MAX_SERVICES: usize = 4096;
/// Default bound on live + trash dests (dest ids are below it).
pub const DEFAULT_MAX_DESTS: usize = 65536;

/// Service flag bits an operator may set (`-p`, `-o`, `-b flag-1..3`).
const USER_FLAGS: u32 = SvcFlags::PERSISTENT | SvcFlags::ONEPACKET | SvcFlags::SCHED_MASK;

/// A virtual service as the engine sees it: configuration, dests and scheduler.
#[derive(Debug)]
pub struct Service {
    /// Stable small index for per-worker counter arrays (see the module
    /// documentation for how ids are reused).
    pub id: u32,
    /// Unique per service created by this table (an edit keeps it): a service
    /// with a reused id is a new object, with its own counters.
    pub serial: u64,
    /// What ipvsadm set.
    pub spec: ServiceSpec,
    /// Real servers in kernel order: newest first.
    pub dests: Vec<Arc<Dest>>,
    /// The scheduler for this dest list.
    pub sched: Box<dyn Scheduler>,
}

impl Service {
    /// The dest for a new connection, or `None` when none is available.
    #[inline]
    pub fn schedule(&self, input: &SchedInput) -> Option<&Arc<Dest>> {
        self.sched
            .schedule(&self.dests, input)
            .and_then(|i| self.dests.get(i))
    }

    /// The dest with this address and port.
    pub fn dest(&self, addr: &IpAddr, port: u16) -> Option<&Arc<Dest>> {
        self.dests
            .iter()
            .find(|d| d.addr == *addr && d.port == port)
    }

    /// This service with another dest list and scheduler, same id and spec.
    fn with_dests(&self, dests: Vec<Arc<Dest>>, sched: Box<dyn Scheduler>) -> Service {
        Service {
            id: self.id,
            serial: self.serial,
            spec: self.spec.clone(),
            dests,
            sched,
        }
    }
}

/// A removed dest still possibly referenced by connections.
#[derive(Debug)]
struct Trashed {
    key: ServiceKey,
    dest: Arc<Dest>,
}

/// All services, their dests and the dest trash.
#[derive(Debug)]
pub struct ServiceTable {
    services: Vec<Arc<Service>>,
    trash: Vec<Trashed>,
    /// Live and trash dests by id.
    dest_ids: Vec<Option<Arc<Dest>>>,
    /// Service ids never handed out are `fresh_svc_id..max_services`.
    fresh_svc_id: u32,
    /// Freed service ids, oldest first.
    freed_svc_ids: VecDeque<u32>,
    /// Serial of the next service created.
    next_serial: u64,
    max_services: usize,
    max_dests: usize,
    params: SchedParams,
    generation: u64,
}

impl Default for ServiceTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceTable {
    /// An empty table with the default bounds (4096 services, 65536 dests).
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_SERVICES, DEFAULT_MAX_DESTS)
    }

    /// An empty table with the given bounds; beyond them adds fail with `NoMemory`.
    pub fn with_limits(max_services: usize, max_dests: usize) -> Self {
        ServiceTable {
            services: Vec::new(),
            trash: Vec::new(),
            dest_ids: Vec::new(),
            fresh_svc_id: 0,
            freed_svc_ids: VecDeque::new(),
            next_serial: 0,
            max_services,
            max_dests,
            params: SchedParams::default(),
            generation: 0,
        }
    }

    /// Scheduler settings (mh table size, lblc/lblcr expiration) for schedulers created
    /// from now on. The mh size must be one of [`crate::sched::mh::PRIMES`].
    pub fn set_sched_params(&mut self, params: SchedParams) -> Result<(), ServiceError> {
        if !crate::sched::mh::PRIMES.contains(&params.mh_table_size) {
            return Err(ServiceError::Invalid);
        }
        self.params = params;
        Ok(())
    }

    /// The scheduler settings in force.
    pub fn sched_params(&self) -> SchedParams {
        self.params
    }

    /// `-A`.
    pub fn add_service(&mut self, spec: ServiceSpec) -> Result<(), ServiceError> {
        check_service(&spec)?;
        if self.position(&spec.key).is_some() {
            return Err(ServiceError::ServiceExists);
        }
        check_netmask(&spec)?;
        if self.fresh_svc_id as usize >= self.max_services && self.freed_svc_ids.is_empty() {
            return Err(ServiceError::NoMemory);
        }
        let sched = new_scheduler_with(spec.sched, spec.flags, &[], &self.params_for(&spec.key))?;
        let id = if (self.fresh_svc_id as usize) < self.max_services {
            self.fresh_svc_id += 1;
            self.fresh_svc_id - 1
        } else {
            self.freed_svc_ids
                .pop_front()
                .ok_or(ServiceError::NoMemory)?
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        self.services.push(Arc::new(Service {
            id,
            serial,
            spec,
            dests: Vec::new(),
            sched,
        }));
        self.generation += 1;
        Ok(())
    }

    /// `-E`: scheduler, flags, timeout and netmask are replaced wholesale. The same
    /// scheduler keeps its state (the kernel calls no hook); another one starts fresh.
    pub fn edit_service(&mut self, spec: ServiceSpec) -> Result<(), ServiceError> {
        check_service(&spec)?;
        let pos = self
            .position(&spec.key)
            .ok_or(ServiceError::NoSuchService)?;
        check_netmask(&spec)?;
        let old = &self.services[pos];
        let sched = if spec.sched == old.sched.kind() {
            old.sched.with_flags(spec.flags)
        } else {
            new_scheduler_with(
                spec.sched,
                spec.flags,
                &old.dests,
                &self.params_for(&spec.key),
            )?
        };
        let svc = Service {
            id: old.id,
            serial: old.serial,
            spec,
            dests: old.dests.clone(),
            sched,
        };
        self.services[pos] = Arc::new(svc);
        self.generation += 1;
        Ok(())
    }

    /// `-D`: the service goes, its dests go to the trash.
    pub fn del_service(&mut self, key: &ServiceKey) -> Result<(), ServiceError> {
        let pos = self.position(key).ok_or(ServiceError::NoSuchService)?;
        let svc = self.services.remove(pos);
        self.unlink_service(&svc);
        self.generation += 1;
        Ok(())
    }

    /// `-C`: every service goes.
    pub fn clear(&mut self) {
        for svc in std::mem::take(&mut self.services) {
            self.unlink_service(&svc);
        }
        self.generation += 1;
    }

    /// `-a`: a new dest at the head of the list, or the trash dest of the same
    /// service and address revived with its counters.
    pub fn add_dest(&mut self, key: &ServiceKey, d: DestSpec) -> Result<(), ServiceError> {
        check_weight_upper(&d)?;
        let pos = self.position(key).ok_or(ServiceError::ServiceNotDefined)?;
        let old = self.services[pos].clone();
        check_dest(&old.spec, &d)?;
        if old.dest(&d.addr, d.port).is_some() {
            return Err(ServiceError::DestExists);
        }
        if old.dests.len() + 1 > old.sched.dest_limit() {
            return Err(ServiceError::Invalid);
        }
        let trashed = self
            .trash
            .iter()
            .position(|t| t.key == *key && t.dest.addr == d.addr && t.dest.port == d.port);
        let dest = match trashed {
            Some(t) => {
                let dest = self.trash.remove(t).dest;
                dest.revive(&d);
                dest
            }
            None => {
                check_unicast(&d.addr)?;
                let id = lowest_free_dest(&self.dest_ids, self.max_dests)
                    .ok_or(ServiceError::NoMemory)?;
                let dest = Arc::new(Dest::new(id, &d));
                take_dest_slot(&mut self.dest_ids, id, dest.clone());
                dest
            }
        };
        let mut dests = Vec::with_capacity(old.dests.len() + 1);
        dests.push(dest);
        dests.extend(old.dests.iter().cloned());
        let sched = old.sched.rebuild(&dests, old.spec.flags)?;
        self.services[pos] = Arc::new(old.with_dests(dests, sched));
        self.generation += 1;
        Ok(())
    }

    /// `-e`: the dest's weight, forwarding method and thresholds change in place
    /// (counters kept), then the scheduler's `upd_dest` runs.
    pub fn edit_dest(&mut self, key: &ServiceKey, d: DestSpec) -> Result<(), ServiceError> {
        check_weight_upper(&d)?;
        let pos = self.position(key).ok_or(ServiceError::ServiceNotDefined)?;
        let old = self.services[pos].clone();
        check_dest(&old.spec, &d)?;
        let dest = old.dest(&d.addr, d.port).ok_or(ServiceError::NoSuchDest)?;
        dest.update(&d);
        let sched = old.sched.rebuild(&old.dests, old.spec.flags)?;
        self.services[pos] = Arc::new(old.with_dests(old.dests.clone(), sched));
        self.generation += 1;
        Ok(())
    }

    /// `-d`: the dest leaves the list for the trash.
    pub fn del_dest(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ServiceError> {
        let pos = self.position(key).ok_or(ServiceError::ServiceNotDefined)?;
        let old = self.services[pos].clone();
        let i = old
            .dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
            .ok_or(ServiceError::NoSuchDest)?;
        let mut dests = old.dests.clone();
        let dest = dests.remove(i);
        dest.set_unavailable();
        let sched = old.sched.rebuild(&dests, old.spec.flags)?;
        self.trash.push(Trashed { key: *key, dest });
        self.services[pos] = Arc::new(old.with_dests(dests, sched));
        self.generation += 1;
        Ok(())
    }

    /// The service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.position(key).map(|p| &self.services[p])
    }

    /// Every service, in insertion order (the kernel lists them in hash order).
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// A live or trash dest by id.
    pub fn dest_by_id(&self, id: u32) -> Option<&Arc<Dest>> {
        self.dest_ids.get(id as usize).and_then(|d| d.as_ref())
    }

    /// The dests in the trash, with the key of the service each left.
    pub fn trash(&self) -> impl Iterator<Item = (&ServiceKey, &Arc<Dest>)> + '_ {
        self.trash.iter().map(|t| (&t.key, &t.dest))
    }

    /// Every live and trash dest with its id, by increasing id.
    pub fn all_dests(&self) -> impl Iterator<Item = (u32, &Arc<Dest>)> + '_ {
        self.dest_ids
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_ref().map(|d| (i as u32, d)))
    }

    /// Frees the trash dests nothing refers to any more, releasing their ids:
    /// no active, inactive or persistent connection, and no lblc/lblcr entry
    /// of their service (the kernel's `ip_vs_dest_trash_expire` skips a dest
    /// with `refcnt > 1`, and those entries hold it). The kernel's idle delay
    /// is not kept.
    pub fn purge_trash(&mut self) {
        let before = self.trash.len();
        let dest_ids = &mut self.dest_ids;
        let services = &self.services;
        self.trash.retain(|t| {
            let d = &t.dest;
            let held = || {
                services
                    .iter()
                    .find(|s| s.spec.key == t.key)
                    .is_some_and(|s| s.sched.holds(d))
            };
            let busy =
                d.activeconns() != 0 || d.inactconns() != 0 || d.persistconns() != 0 || held();
            if !busy {
                if let Some(slot) = dest_ids.get_mut(d.id as usize) {
                    *slot = None;
                }
            }
            busy
        });
        if self.trash.len() != before {
            self.generation += 1;
        }
    }

    /// Number of dests in the trash.
    pub fn trash_len(&self) -> usize {
        self.trash.len()
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn position(&self, key: &ServiceKey) -> Option<usize> {
        self.services.iter().position(|s| s.spec.key == *key)
    }

    fn params_for(&self, key: &ServiceKey) -> SchedParams {
        SchedParams {
            af: Some(key.af()),
            ..self.params
        }
    }

    /// Trashes a removed service's dests and frees its id.
    fn unlink_service(&mut self, svc: &Service) {
        for d in &svc.dests {
            d.set_unavailable();
            self.trash.push(Trashed {
                key: svc.spec.key,
                dest: d.clone(),
            });
        }
        self.freed_svc_ids.push_back(svc.id);
    }
}

/// ipvsadm's service checks (they fail before the kernel is asked).
fn check_service(spec: &ServiceSpec) -> Result<(), ServiceError> {
    let flags = spec.flags;
    if flags.0 & !USER_FLAGS != 0 {
        return Err(ServiceError::Invalid);
    }
    if let ServiceKey::Addr { proto, port, .. } = spec.key {
        // The kernel's EPROTONOSUPPORT: TCP and UDP only.
        if !proto.is_service() {
            return Err(ServiceError::Invalid);
        }
        // "Zero port specified for non-persistent service"
        if port == 0 && !flags.persistent() {
            return Err(ServiceError::Invalid);
        }
        // "One-Packet Scheduling is only for UDP virtual services"
        if flags.one_packet() && proto == Protocol::Tcp {
            return Err(ServiceError::Invalid);
        }
    }
    Ok(())
}

/// The kernel's IPv6 prefix check (`plen < 1 || plen > 128` ⇒ EINVAL).
fn check_netmask(spec: &ServiceSpec) -> Result<(), ServiceError> {
    if spec.key.af() == Af::V6 && !(1..=128).contains(&spec.netmask) {
        return Err(ServiceError::Invalid);
    }
    Ok(())
}

/// ipvsadm's `-w` range (0..65535) upper side; ipvsadm refuses it before the kernel.
fn check_weight_upper(d: &DestSpec) -> Result<(), ServiceError> {
    if d.weight > MAX_WEIGHT {
        return Err(ServiceError::Invalid);
    }
    Ok(())
}

/// The kernel's dest checks, in its order: family (only tunnels may differ), then
/// `weight < 0` and `l_threshold > u_threshold` (both ERANGE).
fn check_dest(svc: &ServiceSpec, d: &DestSpec) -> Result<(), ServiceError> {
    if Af::of(&d.addr) != svc.key.af() && d.fwd != FwdMethod::Tunnel {
        return Err(ServiceError::Invalid);
    }
    if d.weight < 0 || d.l_threshold > d.u_threshold {
        return Err(ServiceError::ThresholdRange);
    }
    Ok(())
}

/// `ip_vs_new_dest`: the address must be unicast (IPv4 not 0.0.0.0, broadcast or
/// multicast; IPv6 unicast and not link-local, a local link-local address being
/// something xvs cannot know).
fn check_unicast(addr: &IpAddr) -> Result<(), ServiceError> {
    let ok = match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => {
            !(a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid)
    }
}

fn lowest_free_dest(slots: &[Option<Arc<Dest>>], max: usize) -> Option<u32> {
    let id = slots
        .iter()
        .position(Option::is_none)
        .unwrap_or(slots.len());
    (id < max).then_some(id as u32)
}

fn take_dest_slot(slots: &mut Vec<Option<Arc<Dest>>>, id: u32, d: Arc<Dest>) {
    let id = id as usize;
    if slots.len() <= id {
        slots.resize(id + 1, None);
    }
    slots[id] = Some(d);
}
