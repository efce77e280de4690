//! The engine's state as metric families (data, no exposition format): the
//! node_exporter ipvs collector's metric names and labels (so existing
//! dashboards work unchanged), and `xvs_*` metrics for what IPVS has no
//! number for. xvsd encodes them with a Prometheus client library.

use super::{Engine, Totals};
use crate::service::ServiceKey;
use std::sync::atomic::Ordering::Relaxed;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// Buckets as (upper bound, observations in this bucket alone), then the
    /// sum and count of all observations.
    Histogram {
        /// (upper bound, observations in this bucket alone).
        buckets: Vec<(f64, u64)>,
        /// Sum of all observations.
        sum: f64,
        /// Count of all observations.
        count: u64,
    },
}

impl Value {
    /// An integer sample (saturating at i64::MAX).
    pub fn int(v: u64) -> Value {
        Value::Int(v.min(i64::MAX as u64) as i64)
    }
}

/// Label pairs of a sample.
pub type Labels = Vec<(String, String)>;

/// A metric family as data: the daemon's HTTP endpoint encodes it with a
/// Prometheus client library (the engine has no I/O and no exposition
/// format of its own). Counter names carry their `_total` suffix.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Metric name (`xvs_...`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Its kind.
    pub kind: Kind,
    /// Its samples, each with its labels.
    pub samples: Vec<(Labels, Value)>,
}

impl Family {
    /// A family with no samples yet.
    pub fn new(name: &str, help: &str, kind: Kind) -> Family {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels.
    pub fn add(&mut self, labels: &[(&str, String)], v: Value) -> &mut Family {
        self.samples.push((
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            v,
        ));
        self
    }

    /// A family of one unlabelled integer sample.
    pub fn single(name: &str, help: &str, kind: Kind, v: u64) -> Family {
        let mut f = Family::new(name, help, kind);
        f.add(&[], Value::int(v));
        f
    }
}

/// The engine's metrics: the node_exporter ipvs collector's names and labels,
/// then `xvs_*` for what IPVS has no number for.
pub fn families(engine: &Engine) -> Vec<Family> {
    let mut out = Vec::new();
    let snap = engine.snapshot();
    let mut total = Totals::default();
    for svc in snap.services() {
        let t = engine.service_totals(svc.id);
        total.conns += t.conns;
        total.inpkts += t.inpkts;
        total.outpkts += t.outpkts;
        total.inbytes += t.inbytes;
        total.outbytes += t.outbytes;
    }
    for (name, help, v) in [
        (
            "node_ipvs_connections_total",
            "The total number of connections made.",
            total.conns,
        ),
        (
            "node_ipvs_incoming_packets_total",
            "The total number of incoming packets.",
            total.inpkts,
        ),
        (
            "node_ipvs_outgoing_packets_total",
            "The total number of outgoing packets.",
            total.outpkts,
        ),
        (
            "node_ipvs_incoming_bytes_total",
            "The total amount of incoming data.",
            total.inbytes,
        ),
        (
            "node_ipvs_outgoing_bytes_total",
            "The total amount of outgoing data.",
            total.outbytes,
        ),
    ] {
        out.push(Family::single(name, help, Kind::Counter, v));
    }
    let mut active = Family::new(
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address.",
        Kind::Gauge,
    );
    let mut inactive = Family::new(
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address.",
        Kind::Gauge,
    );
    let mut weight = Family::new(
        "node_ipvs_backend_weight",
        "The current backend weight by local and remote address.",
        Kind::Gauge,
    );
    for svc in snap.services() {
        let (laddr, lport, proto, mark) = match svc.spec.key {
            ServiceKey::Addr { proto, addr, port } => (
                addr.to_string(),
                port,
                proto.name().to_string(),
                String::new(),
            ),
            ServiceKey::Fwmark { mark, .. } => {
                (String::new(), 0, "FWM".to_string(), format!("{mark:08X}"))
            }
        };
        for d in &svc.dests {
            let labels = [
                ("local_address", laddr.clone()),
                ("local_port", lport.to_string()),
                ("remote_address", d.addr.to_string()),
                ("remote_port", d.port.to_string()),
                ("proto", proto.clone()),
                ("local_mark", mark.clone()),
            ];
            active.add(&labels, Value::int(d.activeconns() as u64));
            inactive.add(&labels, Value::int(d.inactconns() as u64));
            weight.add(&labels, Value::int(d.weight() as u64));
        }
    }
    out.extend([active, inactive, weight]);
    let mut drops = Family::new(
        "xvs_drops_total",
        "Frames dropped by the engine, by reason.",
        Kind::Counter,
    );
    for (r, n) in engine.drops() {
        drops.add(&[("reason", r.name().to_string())], Value::int(n));
    }
    out.push(drops);
    out.push(Family::single(
        "xvs_drop_entry_deleted_total",
        "Connections and templates the drop_entry defence deleted.",
        Kind::Counter,
        engine.dropped_entries(),
    ));
    out.push(Family::single(
        "xvs_conn_table_entries",
        "Connections and templates in the table.",
        Kind::Gauge,
        engine.conns.live() as u64,
    ));
    out.push(Family::single(
        "xvs_conn_table_capacity",
        "Size of the connection table (conn_max).",
        Kind::Gauge,
        engine.conns.capacity() as u64,
    ));
    let workers = engine.worker_stats();
    for (name, help, pick) in [
        (
            "xvs_worker_rx_packets_total",
            "Frames a worker received.",
            0usize,
        ),
        (
            "xvs_worker_tx_packets_total",
            "Frames a worker transmitted.",
            1,
        ),
        (
            "xvs_worker_passed_packets_total",
            "Frames a worker left to the kernel.",
            2,
        ),
    ] {
        let mut f = Family::new(name, help, Kind::Counter);
        for (i, w) in workers.iter().enumerate() {
            let v = [&w.rx_packets, &w.tx_packets, &w.passed][pick].load(Relaxed);
            f.add(&[("worker", i.to_string())], Value::int(v));
        }
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Limits, RuleSet, StaticFib};
    use crate::service::ServiceTable;
    use crate::service::{DestSpec, Protocol, ServiceSpec};
    use std::sync::Arc;

    #[test]
    fn node_exporter_names_and_labels() {
        let mut t = ServiceTable::new();
        let key = ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: "10.77.0.100".parse().unwrap(),
            port: 80,
        };
        t.add_service(ServiceSpec::new(key)).unwrap();
        let mut d = DestSpec::new("10.77.1.11".parse().unwrap(), 8080);
        d.weight = 3;
        t.add_dest(&key, d).unwrap();
        let e = Engine::new(Limits::default(), Arc::new(StaticFib::new()), [1, 2, 3, 4]);
        e.publish(&RuleSet::from_table(&t));
        let _w = e.worker(0);
        let m = families(&e);
        let find = |name: &str| m.iter().find(|f| f.name == name).unwrap();
        let c = find("node_ipvs_connections_total");
        assert_eq!(c.kind, Kind::Counter);
        assert_eq!(c.samples, vec![(vec![], Value::Int(0))]);
        let w = find("node_ipvs_backend_weight");
        assert_eq!(w.kind, Kind::Gauge);
        let labels: Labels = [
            ("local_address", "10.77.0.100"),
            ("local_port", "80"),
            ("remote_address", "10.77.1.11"),
            ("remote_port", "8080"),
            ("proto", "TCP"),
            ("local_mark", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(w.samples, vec![(labels, Value::Int(3))]);
        assert!(find("xvs_drops_total")
            .samples
            .contains(&(vec![("reason".into(), "not_syn".into())], Value::Int(0))));
        assert_eq!(
            find("xvs_worker_rx_packets_total").samples,
            vec![(vec![("worker".into(), "0".into())], Value::Int(0))]
        );
    }
}
