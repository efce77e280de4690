//! Prometheus text exposition of the engine's state: the node_exporter ipvs
//! collector's metric names and labels (so existing dashboards work unchanged),
//! and `xvs_*` metrics for what IPVS has no number for.

use super::{Engine, Totals};
use crate::service::ServiceKey;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric as Prometheus text (format 0.0.4).
pub fn render(engine: &Engine) -> String {
    let mut out = String::with_capacity(4096);
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
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let mut rows = Vec::new();
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
            let labels = format!(
                "local_address=\"{laddr}\",local_port=\"{lport}\",remote_address=\"{}\",remote_port=\"{}\",proto=\"{proto}\",local_mark=\"{mark}\"",
                d.addr, d.port
            );
            rows.push((labels, d.activeconns(), d.inactconns(), d.weight()));
        }
    }
    for (k, (name, help)) in [
        (
            "node_ipvs_backend_connections_active",
            "The current active connections by local and remote address.",
        ),
        (
            "node_ipvs_backend_connections_inactive",
            "The current inactive connections by local and remote address.",
        ),
        (
            "node_ipvs_backend_weight",
            "The current backend weight by local and remote address.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        header(&mut out, name, "gauge", help);
        for r in &rows {
            let v = [r.1 as i64, r.2 as i64, r.3 as i64][k];
            let _ = writeln!(out, "{name}{{{}}} {v}", r.0);
        }
    }
    header(
        &mut out,
        "xvs_drops_total",
        "counter",
        "Frames dropped by the engine, by reason.",
    );
    for (r, n) in engine.drops() {
        let _ = writeln!(out, "xvs_drops_total{{reason=\"{}\"}} {n}", r.name());
    }
    header(
        &mut out,
        "xvs_drop_entry_deleted_total",
        "counter",
        "Connections and templates the drop_entry defence deleted.",
    );
    let _ = writeln!(
        out,
        "xvs_drop_entry_deleted_total {}",
        engine.dropped_entries()
    );
    header(
        &mut out,
        "xvs_conn_table_entries",
        "gauge",
        "Connections and templates in the table.",
    );
    let _ = writeln!(out, "xvs_conn_table_entries {}", engine.conns.live());
    header(
        &mut out,
        "xvs_conn_table_capacity",
        "gauge",
        "Size of the connection table (conn_max).",
    );
    let _ = writeln!(out, "xvs_conn_table_capacity {}", engine.conns.capacity());
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
        header(&mut out, name, "counter", help);
        for (i, w) in workers.iter().enumerate() {
            let v = [&w.rx_packets, &w.tx_packets, &w.passed][pick].load(Relaxed);
            let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Limits, RuleSet, StaticFib};
    use crate::service::table::ServiceTable;
    use crate::service::{DestSpec, Protocol, ServiceSpec};
    use std::sync::Arc;

    #[test]
    fn renders_node_exporter_names_and_labels() {
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
        let m = render(&e);
        assert!(m.contains(
            "# TYPE node_ipvs_connections_total counter\nnode_ipvs_connections_total 0\n"
        ));
        assert!(m.contains(
            "node_ipvs_backend_weight{local_address=\"10.77.0.100\",local_port=\"80\",remote_address=\"10.77.1.11\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 3\n"
        ));
        assert!(m.contains("xvs_drops_total{reason=\"not_syn\"} 0\n"));
        assert!(m.contains("xvs_worker_rx_packets_total{worker=\"0\"} 0\n"));
    }
}
