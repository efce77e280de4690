//! The control-plane state: the service table and everything else `xvsadm`
//! can change, applied to the engine as a new snapshot after every change.

use crate::dataplane::{rule_keys, SteerSync};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use xvs_core::conn::{ConnView, EntryFlags, Timeouts, MAX_LIPS, TEMPLATE_PROTO};
use xvs_core::engine::state_name;
use xvs_core::engine::{Engine, Knobs, MarkRule, RuleSet};
use xvs_core::service::ServiceTable;
use xvs_core::service::{ServiceError, ServiceKey};
use xvs_core::time::{Tick, Time};
use xvs_core::wire::IpProtocol;
use xvs_ctl::MarkSpec;
use xvs_ctl::{ConnInfo, DaemonSpec, DaemonState, DestInfo, ErrorReply, Op, Response, ServiceInfo};
use xvs_xdp::SteerKey;

/// Why an op failed: the message ipvsadm prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl From<ServiceError> for OpError {
    fn from(e: ServiceError) -> Self {
        OpError(e.to_string())
    }
}

/// Everything the control plane owns.
pub struct State {
    pub table: ServiceTable,
    pub timeouts: Timeouts,
    pub knobs: Knobs,
    /// fwmark classification rules, in order (xvs assigns marks itself).
    pub marks: Vec<MarkSpec>,
    pub daemons: Vec<DaemonSpec>,
    pub laddrs: BTreeMap<String, (ServiceKey, Vec<IpAddr>)>,
    pub engine: Arc<Engine>,
    /// The data plane's steering map, kept in step with every rule change
    /// (None without data interfaces).
    pub steer: Option<Arc<SteerSync>>,
    /// The sync daemons (None in a dry run: nothing starts there).
    pub sync: Option<Arc<crate::sync::SyncCtl>>,
    /// The sync knobs (kept here too, so that a dry run checks a change).
    pub sync_cfg: crate::sync::SyncConfig,
}

fn key_id(k: &ServiceKey) -> String {
    format!("{k}")
}

impl State {
    pub fn new(engine: Arc<Engine>, knobs: Knobs, marks: Vec<MarkRule>) -> State {
        let marks = marks.iter().map(MarkSpec::from_rule).collect();
        let s = State {
            table: ServiceTable::with_limits(engine.limits.max_services, engine.limits.max_dests),
            timeouts: Timeouts::default(),
            knobs,
            marks,
            daemons: Vec::new(),
            laddrs: BTreeMap::new(),
            engine,
            steer: None,
            sync: None,
            sync_cfg: crate::sync::SyncConfig::default(),
        };
        s.publish();
        s
    }

    /// Now, on the engine's clock.
    pub fn now(&self) -> Time {
        crate::clock::now()
    }

    /// Hands the current rules to the engine.
    pub fn publish(&self) {
        let mut r = RuleSet::from_table(&self.table);
        r.laddrs = self.laddrs.values().cloned().collect();
        r.marks = self.mark_rules();
        r.timeouts = self.timeouts;
        r.knobs = self.knobs;
        self.engine.publish(&r);
    }

    /// The engine's form of the mark rules (one per port range, in order).
    pub fn mark_rules(&self) -> Vec<MarkRule> {
        self.marks.iter().flat_map(MarkSpec::rules).collect()
    }

    /// The steering keys the current rules need.
    pub fn steer_keys(&self) -> HashSet<SteerKey> {
        let mut keys = rule_keys(
            self.table.services(),
            self.laddrs.values().flat_map(|(_, a)| a),
        );
        // A NAT dest taken out keeps its connections, as in IPVS (it waits
        // in the trash): their replies must still come to xvs until it is
        // purged, or a health check's removal would cut them.
        for (k, d) in self.table.trash() {
            if d.fwd() != xvs_core::service::FwdMethod::Masq {
                continue;
            }
            let protos: &[IpProtocol] = match k {
                ServiceKey::Addr {
                    proto: xvs_core::service::Protocol::Tcp,
                    ..
                } => &[IpProtocol::Tcp],
                ServiceKey::Addr { .. } => &[IpProtocol::Udp],
                ServiceKey::Fwmark { .. } => &[IpProtocol::Tcp, IpProtocol::Udp],
            };
            for &proto in protos {
                keys.insert(SteerKey::RealServer {
                    addr: d.addr.into(),
                    port: d.port,
                    proto,
                });
            }
        }
        keys
    }

    /// Applies one op (without publishing). Ops are checked here, whoever sent
    /// them: a control-socket client need not be xvsadm.
    fn apply_one(&mut self, op: &Op) -> Result<(), OpError> {
        xvs_ctl::check::check_op(op).map_err(OpError)?;
        match op {
            Op::AddService(s) => self.table.add_service(s.clone())?,
            Op::EditService(s) => self.table.edit_service(s.clone())?,
            Op::DelService(k) => {
                self.table.del_service(k)?;
                self.laddrs.remove(&key_id(k));
            }
            Op::Clear => {
                self.table.clear();
                self.laddrs.clear();
                // The mark rules exist for fwmark services: -C clears them
                // too, so `-S | -C; -R` restores the same set.
                self.marks.clear();
            }
            Op::AddMark(m) => {
                if self.marks.contains(m) {
                    return Err(OpError("Mark rule already exists".into()));
                }
                self.marks.push(m.clone());
            }
            Op::DelMark(m) => {
                let n = self.marks.len();
                self.marks.retain(|x| x != m);
                if self.marks.len() == n {
                    return Err(OpError("No such mark rule".into()));
                }
            }
            Op::SetMarks(ms) => self.marks = ms.clone(),
            Op::AddDest(k, d) => self.table.add_dest(k, d.clone())?,
            Op::EditDest(k, d) => self.table.edit_dest(k, d.clone())?,
            Op::DelDest(k, a, p) => self.table.del_dest(k, *a, *p)?,
            Op::Zero(k) => {
                let svcs: Vec<_> = match k {
                    Some(k) => vec![self
                        .table
                        .get(k)
                        .ok_or(ServiceError::NoSuchService)?
                        .clone()],
                    None => self.table.services().to_vec(),
                };
                for s in svcs {
                    self.engine.zero_service(s.id);
                    for d in &s.dests {
                        self.engine.zero_dest(d.id);
                    }
                }
            }
            Op::SetTimeouts(t, f, u) => self.timeouts.set(*t, *f, *u),
            Op::StartDaemon(d) => {
                if self.daemons.iter().any(|x| x.state == d.state) {
                    return Err(OpError("Daemon has already run".into()));
                }
                let mut d = d.clone();
                // The kernel's defaults, as --daemon then shows them.
                if d.sync_maxlen == 0 {
                    d.sync_maxlen = 1472;
                }
                if d.mcast_group.is_none() {
                    d.mcast_group = Some(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81)));
                }
                if d.mcast_port == 0 {
                    d.mcast_port = 8848;
                }
                if d.mcast_ttl == 0 {
                    d.mcast_ttl = 1;
                }
                if let Some(s) = &self.sync {
                    s.start(&d).map_err(|e| OpError(format!("{e:#}")))?;
                }
                self.daemons.push(d);
                self.daemons.sort_by_key(|d| d.state != DaemonState::Master);
            }
            Op::StopDaemon(st) => {
                let before = self.daemons.len();
                self.daemons.retain(|d| d.state != *st);
                if self.daemons.len() == before {
                    return Err(OpError("No daemon is running".into()));
                }
                if let Some(s) = &self.sync {
                    s.stop(*st);
                }
            }
            Op::SetSyncKnob(name, v) => {
                let mut c = self.sync_cfg;
                c.set(name, *v).map_err(|e| OpError(format!("{e:#}")))?;
                if let Some(s) = &self.sync {
                    s.set_knob(name, *v)
                        .map_err(|e| OpError(format!("{e:#}")))?;
                }
                self.sync_cfg = c;
            }
            Op::SetKnob(name, v) => {
                xvs_ctl::knobs::set(&mut self.knobs, name, *v).map_err(OpError)?
            }
            Op::AddLaddr(k, a) => {
                if self.table.get(k).is_none() {
                    return Err(ServiceError::ServiceNotDefined.into());
                }
                // FULLNAT rewrites the source in place: one family end to end.
                if xvs_core::service::Af::of(a) != k.af() {
                    return Err(OpError(
                        "Local address family differs from the service's".into(),
                    ));
                }
                let e = self
                    .laddrs
                    .entry(key_id(k))
                    .or_insert_with(|| (*k, Vec::new()));
                if e.1.contains(a) {
                    return Err(OpError("Local address already exists".into()));
                }
                e.1.push(*a);
                // Refused now rather than left out of the rules: ids are held
                // by every pool's addresses and by removed ones still in use.
                let listed: usize = self.laddrs.values().map(|(_, l)| l.len()).sum();
                let fits = listed + self.engine.lip_ids_held() <= MAX_LIPS || {
                    // Near the bound: count exactly (pools may share addresses).
                    let all: HashSet<IpAddr> = self
                        .laddrs
                        .values()
                        .flat_map(|(_, l)| l.iter().copied())
                        .collect();
                    self.engine.lips_fit(&all)
                };
                if !fits {
                    if let Some(e) = self.laddrs.get_mut(&key_id(k)) {
                        e.1.retain(|x| x != a);
                        if e.1.is_empty() {
                            self.laddrs.remove(&key_id(k));
                        }
                    }
                    return Err(OpError(format!(
                        "Too many local addresses: xvsd holds at most {MAX_LIPS}, \
                         counting removed ones until their connections end"
                    )));
                }
            }
            Op::DelLaddr(k, a) => {
                if self.table.get(k).is_none() {
                    return Err(ServiceError::ServiceNotDefined.into());
                }
                let Some(e) = self.laddrs.get_mut(&key_id(k)) else {
                    return Err(OpError("No such local address".into()));
                };
                let n = e.1.len();
                e.1.retain(|x| x != a);
                if e.1.len() == n {
                    return Err(OpError("No such local address".into()));
                }
            }
        }
        Ok(())
    }

    /// Applies one op and publishes (see [`State::apply_batch`]).
    pub fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        self.apply_batch(std::slice::from_ref(op))
            .map_err(|(_, e)| e)
    }

    /// Applies ops all or nothing: they are first tried on a copy of the rules
    /// (specs only, so nothing live is touched), then the steering map takes
    /// the keys the new rules add (all or nothing too), then they are applied
    /// for real and published, and the keys they dropped leave the map.
    pub fn apply_batch(&mut self, ops: &[Op]) -> Result<(), (usize, OpError)> {
        let mut dry = State {
            table: self.spec_copy(),
            timeouts: self.timeouts,
            knobs: self.knobs,
            marks: self.marks.clone(),
            daemons: self.daemons.clone(),
            laddrs: self.laddrs.clone(),
            engine: self.engine.clone(),
            steer: None,
            sync: None,
            sync_cfg: self.sync_cfg,
        };
        for (i, op) in ops.iter().enumerate() {
            // Zeroing touches only counters: nothing to validate beyond the key.
            if let Op::Zero(Some(k)) = op {
                xvs_ctl::check::check_op(op).map_err(|e| (i, OpError(e)))?;
                if dry.table.get(k).is_none() {
                    return Err((i, ServiceError::NoSuchService.into()));
                }
                continue;
            }
            if let Op::Zero(None) = op {
                continue;
            }
            dry.apply_one(op).map_err(|e| (i, e))?;
        }
        let want = dry.steer_keys();
        if let Some(s) = &self.steer {
            s.prepare(&want, &dry.mark_rules()).map_err(|e| {
                (
                    ops.len().saturating_sub(1),
                    OpError(format!(
                        "Steering map update failed, nothing was changed: {e:#}"
                    )),
                )
            })?;
        }
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.apply_one(op) {
                // Cannot happen after the dry run; publish what was applied.
                self.publish();
                if let Some(s) = &self.steer {
                    s.commit(self.steer_keys());
                }
                return Err((i, e));
            }
        }
        self.publish();
        if let Some(s) = &self.steer {
            s.commit(want);
        }
        Ok(())
    }

    /// A fresh table with the same services and dests (same order), sharing nothing.
    fn spec_copy(&self) -> ServiceTable {
        let mut t = ServiceTable::with_limits(
            self.engine.limits.max_services,
            self.engine.limits.max_dests,
        );
        // The parameters were checked when they were set.
        let _ = t.set_sched_params(self.table.sched_params());
        for s in self.table.services() {
            let _ = t.add_service(s.spec.clone());
            // Kernel order is newest first: add oldest first.
            for d in s.dests.iter().rev() {
                let _ = t.add_dest(&s.spec.key, d.spec());
            }
        }
        t
    }

    /// `-L` data: all services or one.
    pub fn list_services(&self, key: Option<&ServiceKey>) -> Response {
        let svcs: Vec<_> = match key {
            Some(k) => match self.table.get(k) {
                Some(s) => vec![s.clone()],
                None => {
                    return Response::Error(ErrorReply {
                        message: ServiceError::NoSuchService.to_string(),
                        index: None,
                    })
                }
            },
            None => self.table.services().to_vec(),
        };
        let services = svcs
            .iter()
            .map(|s| ServiceInfo {
                spec: s.spec.clone(),
                stats: self.engine.service_totals(s.id),
                rates: self.engine.service_rates(s.id),
                dests: s
                    .dests
                    .iter()
                    .map(|d| DestInfo {
                        spec: d.spec(),
                        activeconns: d.activeconns(),
                        inactconns: d.inactconns(),
                        persistconns: d.persistconns(),
                        stats: self.engine.dest_totals(d.id),
                        rates: self.engine.dest_rates(d.id),
                    })
                    .collect(),
            })
            .collect();
        Response::Services {
            conn_tab_size: self.engine.conns.capacity(),
            services,
        }
    }

    /// The laddr pools, of one service or all.
    pub fn list_laddrs(&self, key: Option<&ServiceKey>) -> Vec<(ServiceKey, Vec<IpAddr>)> {
        self.laddrs
            .values()
            .filter(|(k, _)| key.is_none_or(|w| w == k))
            .cloned()
            .collect()
    }
}

/// A connection or template as `-c` lists it, from its table entry and expiry
/// tick, at tick `now`; None for a connection that has expired and only waits
/// for the sweep.
pub fn conn_info(v: &ConnView, expires: Tick, now: Tick) -> Option<ConnInfo> {
    let template = v.flags().is_template();
    let dead = v.flags().contains(EntryFlags::DEAD_TEMPLATE);
    let proto = v.proto & !TEMPLATE_PROTO;
    let left = expires.wrapping_sub(now) as i32;
    if !template && left < 0 {
        return None;
    }
    Some(ConnInfo {
        proto: match proto {
            6 => "TCP",
            17 => "UDP",
            _ => "IP",
        }
        .into(),
        expire_secs: (left.max(0) as u32) / 100,
        state: state_name(proto, v.state()).into(),
        caddr: v.caddr.to_ip(),
        cport: v.cport,
        vaddr: v.vaddr.to_ip(),
        // ip_vs_check_template rehashes an invalidated template under ports
        // 0xffff, and /proc/net/ip_vs_conn lists it so.
        vport: if dead { 0xffff } else { v.vport },
        daddr: v.daddr.to_ip(),
        dport: if dead { 0xffff } else { v.dport },
        template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_core::engine::{Limits, StaticFib};
    use xvs_core::service::{DestSpec, FwdMethod, Protocol, ServiceSpec};

    /// `-c` shows templates as /proc/net/ip_vs_conn does: state NONE or
    /// ASSURED (`ip_vs_state_name`), and an invalidated one under ports 65535
    /// (`ip_vs_check_template`).
    #[test]
    fn templates_are_listed_as_the_kernel_lists_them() {
        use xvs_core::addr::Addr;
        use xvs_core::conn::{ConnTable, EntryState, NewConn, TemplateRef};
        use xvs_core::service::FwdMethod;
        let t = ConnTable::new(8, [1, 2, 3, 4]);
        let tpl = |vport: u16, assured: bool, fl: EntryFlags| NewConn {
            proto: TEMPLATE_PROTO | 6,
            caddr: Addr::v4([10, 77, 0, 2]),
            cport: 0,
            vaddr: Addr::v4([10, 77, 0, 100]),
            vport,
            daddr: Addr::v4([10, 77, 1, 11]),
            dport: 8080,
            lip: 0,
            lport: 0,
            fwd: FwdMethod::Masq,
            svc_id: 0,
            dest_id: 0,
            control: TemplateRef::NONE,
            state: EntryState::Template { assured },
            in_pkts: 0,
            flags: EntryFlags::TEMPLATE | fl,
            expires: 30_000,
            timeout: 300,
        };
        t.insert(&tpl(80, false, EntryFlags::NONE)).unwrap();
        t.insert(&tpl(81, true, EntryFlags::NONE)).unwrap();
        t.insert(&tpl(82, false, EntryFlags::DEAD_TEMPLATE))
            .unwrap();
        let mut rows = Vec::new();
        t.for_each_live(|v| rows.push(conn_info(&v, v.expires(), 0).unwrap()));
        let got: Vec<_> = rows
            .iter()
            .map(|c| (c.state.as_str(), c.cport, c.vport, c.dport, c.expire_secs))
            .collect();
        assert_eq!(
            got,
            [
                ("NONE", 0, 80, 8080, 300),
                ("ASSURED", 0, 81, 8080, 300),
                ("NONE", 0, 65535, 65535, 300)
            ]
        );
    }

    fn state() -> State {
        let e = Engine::new(
            Limits {
                conn_max: 1024,
                ..Limits::default()
            },
            Arc::new(StaticFib::new()),
            [1, 2, 3, 4],
        );
        State::new(e, Knobs::default(), Vec::new())
    }

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: "10.77.0.100".parse().unwrap(),
            port,
        }
    }

    #[test]
    fn batch_is_all_or_nothing() {
        let mut s = state();
        let mut d = DestSpec::new("10.77.1.11".parse().unwrap(), 80);
        d.fwd = FwdMethod::Masq;
        let ops = vec![
            Op::AddService(ServiceSpec::new(key(80))),
            Op::AddDest(key(80), d.clone()),
            Op::AddDest(key(80), d.clone()), // duplicate: fails
        ];
        let (i, e) = s.apply_batch(&ops).unwrap_err();
        assert_eq!((i, e.0.as_str()), (2, "Destination already exists"));
        assert!(
            s.table.services().is_empty(),
            "nothing of the batch applied"
        );
        s.apply_batch(&ops[..2]).unwrap();
        assert_eq!(s.table.services().len(), 1);
        assert_eq!(s.engine.snapshot().services().count(), 1, "published");
    }

    /// What xvsadm would refuse, a raw control client cannot set either: a
    /// `--set` timeout of 248.5 days (2^31 ticks) would wrap the expiry
    /// comparison and every new connection would be born expired.
    #[test]
    fn ops_are_checked_whoever_sends_them() {
        let mut s = state();
        let before = s.timeouts;
        assert_eq!(
            s.apply(&Op::SetTimeouts(21_474_837, 0, 0)).unwrap_err().0,
            "invalid timeout value `21474837' specified"
        );
        assert_eq!(s.timeouts, before, "nothing changed");
        let mut spec = ServiceSpec::new(key(80));
        spec.flags = xvs_core::service::SvcFlags(xvs_core::service::SvcFlags::PERSISTENT);
        spec.timeout = u32::MAX;
        assert_eq!(
            s.apply(&Op::AddService(spec.clone())).unwrap_err().0,
            "invalid timeout value `4294967295' specified"
        );
        assert!(s.table.services().is_empty());
        // In a batch too, with the index of the op.
        spec.timeout = 360;
        let mut d = DestSpec::new("10.77.1.11".parse().unwrap(), 80);
        d.weight = 70_000;
        let (i, e) = s
            .apply_batch(&[Op::AddService(spec), Op::AddDest(key(80), d)])
            .unwrap_err();
        assert_eq!((i, e.0.as_str()), (1, "illegal weight specified"));
        assert!(s.table.services().is_empty());
        // A bad -Z in a batch is found by the trial run: nothing applied.
        let (i, e) = s
            .apply_batch(&[
                Op::SetTimeouts(1000, 0, 0),
                Op::Zero(Some(ServiceKey::Fwmark {
                    mark: 0,
                    af: xvs_core::service::Af::V4,
                })),
            ])
            .unwrap_err();
        assert_eq!((i, e.0.as_str()), (1, "invalid fwmark value `0' specified"));
        assert_eq!(s.timeouts, before);
        s.apply(&Op::SetTimeouts(2_678_400, 0, 0)).unwrap();
        assert_eq!(s.timeouts.listed().0, 2_678_400);
    }

    /// The local-address registry has MAX_LIPS ids: one address too many is
    /// refused at `-P` time (it used to be accepted, listed by `-G` and left
    /// without an id), and a removed address frees its id once no connection
    /// can hold it.
    #[test]
    fn local_addresses_beyond_the_registry_are_refused_at_add_time() {
        let mut s = state();
        s.apply(&Op::AddService(ServiceSpec::new(key(80)))).unwrap();
        let addr = |i: usize| -> IpAddr {
            format!("10.78.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .unwrap()
        };
        let ops: Vec<Op> = (0..MAX_LIPS)
            .map(|i| Op::AddLaddr(key(80), addr(i)))
            .collect();
        s.apply_batch(&ops).unwrap();
        let err = s
            .apply(&Op::AddLaddr(key(80), addr(MAX_LIPS)))
            .unwrap_err()
            .0;
        assert_eq!(
            err,
            "Too many local addresses: xvsd holds at most 4096, counting removed ones until their connections end"
        );
        let listed = s.list_laddrs(None);
        assert_eq!(
            listed[0].1.len(),
            MAX_LIPS,
            "the refused address is not listed"
        );
        let svc = s.table.get(&key(80)).unwrap().id;
        assert_eq!(
            s.engine.snapshot().lips(svc).len(),
            MAX_LIPS,
            "every listed address has an id"
        );
        // In a batch, the op is named.
        let (i, _) = s
            .apply_batch(&[
                Op::SetTimeouts(0, 0, 0),
                Op::AddLaddr(key(80), addr(MAX_LIPS)),
            ])
            .unwrap_err();
        assert_eq!(i, 1);
        // A removed address holds its id until sweeps show no connection has it.
        s.apply(&Op::DelLaddr(key(80), addr(0))).unwrap();
        assert!(s.apply(&Op::AddLaddr(key(80), addr(MAX_LIPS))).is_err());
        let now = s.now();
        s.engine.housekeep_all(now);
        s.engine.housekeep_all(now);
        s.apply(&Op::AddLaddr(key(80), addr(MAX_LIPS))).unwrap();
        assert_eq!(s.engine.snapshot().lips(svc).len(), MAX_LIPS);
    }

    /// A NAT dest taken out keeps its replies steered while it is in the
    /// trash (its connections go on), and not after.
    #[test]
    fn removed_nat_dests_stay_steered_until_purged() {
        let mut s = state();
        let mut d = DestSpec::new("10.77.1.11".parse().unwrap(), 8080);
        d.fwd = FwdMethod::Masq;
        s.apply_batch(&[
            Op::AddService(ServiceSpec::new(key(80))),
            Op::AddDest(key(80), d.clone()),
        ])
        .unwrap();
        let rs = SteerKey::RealServer {
            addr: d.addr.into(),
            port: 8080,
            proto: IpProtocol::Tcp,
        };
        assert!(s.steer_keys().contains(&rs));
        s.apply(&Op::DelDest(key(80), d.addr, 8080)).unwrap();
        assert_eq!(s.table.trash_len(), 1);
        assert!(s.steer_keys().contains(&rs), "still steered from the trash");
        s.table.purge_trash();
        assert!(!s.steer_keys().contains(&rs), "gone with the trash");
    }

    #[test]
    fn sync_knobs_all_or_nothing() {
        let mut s = state();
        s.apply(&Op::SetSyncKnob("sync_period".into(), 0)).unwrap();
        assert_eq!(s.sync_cfg.sync_period, 0);
        let (i, e) = s
            .apply_batch(&[
                Op::SetSyncKnob("sync_period".into(), 100),
                Op::SetSyncKnob("sync_retries".into(), 9),
            ])
            .unwrap_err();
        assert_eq!(i, 1);
        assert!(e.0.contains("sync_retries"), "{}", e.0);
        assert_eq!(s.sync_cfg.sync_period, 0, "nothing of the batch applied");
    }

    /// `--knob` reaches the engine's snapshot, all or nothing.
    #[test]
    fn knobs_are_published_all_or_nothing() {
        let mut s = state();
        s.apply_batch(&[
            Op::SetKnob("sloppy_tcp".into(), 1),
            Op::SetKnob("net.ipv4.vs.drop_packet".into(), 2),
        ])
        .unwrap();
        let k = s.engine.snapshot().knobs;
        assert!(k.sloppy_tcp);
        assert_eq!(k.drop_packet, 2);
        let (i, e) = s
            .apply_batch(&[
                Op::SetKnob("sloppy_tcp".into(), 0),
                Op::SetKnob("drop_packet".into(), -1),
            ])
            .unwrap_err();
        assert_eq!(i, 1);
        assert!(e.0.contains("drop_packet takes 0 to 3"), "{}", e.0);
        assert_eq!(s.knobs, k, "nothing of the batch applied");
        assert_eq!(s.engine.snapshot().knobs, k);
    }

    #[test]
    fn daemons_and_laddrs() {
        let mut s = state();
        let d = DaemonSpec {
            state: DaemonState::Backup,
            mcast_ifn: "eth0".into(),
            syncid: 3,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        };
        s.apply(&Op::StartDaemon(d.clone())).unwrap();
        assert_eq!(
            s.apply(&Op::StartDaemon(d)).unwrap_err().0,
            "Daemon has already run"
        );
        assert_eq!(
            s.apply(&Op::StopDaemon(DaemonState::Master)).unwrap_err().0,
            "No daemon is running"
        );
        assert_eq!(
            s.apply(&Op::AddLaddr(key(80), "10.77.1.200".parse().unwrap()))
                .unwrap_err()
                .0,
            "Service not defined"
        );
        assert_eq!(
            s.apply(&Op::DelLaddr(key(80), "10.77.1.200".parse().unwrap()))
                .unwrap_err()
                .0,
            "Service not defined"
        );
        s.apply(&Op::AddService(ServiceSpec::new(key(80)))).unwrap();
        assert_eq!(
            s.apply(&Op::AddLaddr(key(80), "fd77::200".parse().unwrap()))
                .unwrap_err()
                .0,
            "Local address family differs from the service's"
        );
        s.apply(&Op::AddLaddr(key(80), "10.77.1.200".parse().unwrap()))
            .unwrap();
    }
}
