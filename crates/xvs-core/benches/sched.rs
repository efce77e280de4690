//! Scheduling cost per new connection: `Service::schedule` for every scheduler at
//! 2, 16 and 256 dests, over 1024 rotating client (and destination) addresses.
//! Dests carry a spread of weights and connection counts so the least-connection
//! schedulers do real comparisons. Run: `cargo bench -p xvs-core --bench sched`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use xvs_core::addr::Addr;
use xvs_core::sched::SchedInput;
use xvs_core::service::ServiceTable;
use xvs_core::service::{DestSpec, Protocol, SchedKind, ServiceKey, ServiceSpec};
use xvs_core::time::Time;

fn table(kind: SchedKind, n: u32) -> (ServiceTable, ServiceKey) {
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100)),
        port: 80,
    };
    let mut t = ServiceTable::new();
    let mut spec = ServiceSpec::new(key);
    spec.sched = kind;
    t.add_service(spec).unwrap();
    for i in 0..n {
        let mut d = DestSpec::new(IpAddr::V4(Ipv4Addr::from(0x0a4d_0100 + i)), 80);
        d.weight = 1 + (i % 5) as i32;
        t.add_dest(&key, d).unwrap();
    }
    // A spread of load: active 1..8 (no idle dest, so nq walks the whole list),
    // inactive 0..11; ovf finds some dests with active <= weight.
    for (i, d) in t.get(&key).unwrap().dests.iter().enumerate() {
        for _ in 0..(1 + i * 7 % 8) {
            d.bind_conn(false);
            d.conn_activated();
        }
        for _ in 0..(i * 5 % 12) {
            d.bind_conn(false);
        }
    }
    (t, key)
}

fn bench(c: &mut Criterion) {
    let inputs: Vec<SchedInput> = (0..1024u32)
        .map(|i| SchedInput {
            saddr: Addr::v4(
                (0xc633_6400u32.wrapping_add(i.wrapping_mul(2_654_435_761))).to_be_bytes(),
            ),
            daddr: Addr::v4((0xc000_0200 + (i % 256)).to_be_bytes()),
            sport: 1024 + i as u16,
            dport: 80,
            now: Time::from_secs(1000),
        })
        .collect();
    let mut g = c.benchmark_group("schedule");
    for kind in SchedKind::ALL {
        for n in [2u32, 16, 256] {
            let (t, key) = table(kind, n);
            let svc = t.get(&key).unwrap().clone();
            let mut k = 0usize;
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    k = (k + 1) & 1023;
                    black_box(svc.schedule(black_box(&inputs[k])).map(|d| d.id))
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
