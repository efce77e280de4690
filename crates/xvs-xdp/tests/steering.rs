//! Steering: frames to a configured VIP:port reach the AF_XDP socket, every
//! other frame reaches the kernel, and after the key is removed the same
//! frames reach the kernel — native and generic XDP.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use xvs_core::addr::Addr;
use xvs_core::wire::IpProtocol;
use xvs_xdp::{
    Backend, BackendChoice, Disposition, Interface, SteerKey, Steering, Worker, WorkerConfig,
};

const VIP4: &str = "10.77.10.100";
const VIP6: &str = "fd77::10:100";

fn lab(tag: &str) -> (xvs_netns::Netns, xvs_netns::Netns) {
    let c = ns(&format!("{tag}c"));
    let d = ns(&format!("{tag}d"));
    xvs_netns::veth("c0", &c, "d0", &d).unwrap();
    sh(
        &c,
        "ip addr add 10.77.10.1/24 dev c0 && ip addr add fd77::10:1/64 dev c0 nodad",
    );
    sh(&d, &format!("ip addr add 10.77.10.2/24 dev d0 && ip addr add {VIP4}/24 dev d0 && ip addr add fd77::10:2/64 dev d0 nodad && ip addr add {VIP6}/64 dev d0 nodad"));
    (c, d)
}

fn keys() -> [SteerKey; 3] {
    let v4 = Addr::from(VIP4.parse::<std::net::IpAddr>().unwrap());
    let v6 = Addr::from(VIP6.parse::<std::net::IpAddr>().unwrap());
    [
        SteerKey::Vip {
            addr: v4,
            port: 5000,
            proto: IpProtocol::Udp,
        },
        SteerKey::Vip {
            addr: v6,
            port: 5000,
            proto: IpProtocol::Udp,
        },
        SteerKey::Vip {
            addr: v4,
            port: 5001,
            proto: IpProtocol::Tcp,
        },
    ]
}

fn recv_all(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while out.len() < n {
        match s.recv(&mut b) {
            Ok(k) => out.push(b[..k].to_vec()),
            Err(_) => break,
        }
    }
    out
}

fn nothing_waiting(s: &UdpSocket) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 256];
    s.recv(&mut b).is_err()
}

fn steering(tag: &str, backend: Backend) {
    let (c, d) = lab(tag);
    let (steer, iface, mut worker) = d
        .run(|| {
            let steer = Steering::new().unwrap();
            let iface = Interface::attach(&steer, "d0", BackendChoice::Force(backend)).unwrap();
            let w = Worker::new(&[&iface], 0, &WorkerConfig::default()).unwrap();
            (steer, iface, w)
        })
        .unwrap();
    assert_eq!(iface.backend(), backend);
    for k in keys() {
        assert!(steer.add(k).unwrap());
    }
    // Kernel sockets on the steered and on a non-steered port.
    let (u4, u6, other, tcp) = d
        .run(|| {
            (
                UdpSocket::bind(format!("{VIP4}:5000")).unwrap(),
                UdpSocket::bind(format!("[{VIP6}]:5000")).unwrap(),
                UdpSocket::bind(format!("{VIP4}:5002")).unwrap(),
                TcpListener::bind(format!("{VIP4}:5001")).unwrap(),
            )
        })
        .unwrap();

    let send = |round: &str| {
        c.run(|| {
            let s4 = UdpSocket::bind("10.77.10.1:0").unwrap();
            let s6 = UdpSocket::bind("[fd77::10:1]:0").unwrap();
            for i in 0..4 {
                s4.send_to(format!("{round}v4-{i}").as_bytes(), format!("{VIP4}:5000"))
                    .unwrap();
                s6.send_to(
                    format!("{round}v6-{i}").as_bytes(),
                    format!("[{VIP6}]:5000"),
                )
                .unwrap();
            }
            for i in 0..4 {
                s4.send_to(
                    format!("{round}other-{i}").as_bytes(),
                    format!("{VIP4}:5002"),
                )
                .unwrap();
            }
        })
        .unwrap();
    };

    // 1. Steered: UDP v4, UDP v6 and a TCP SYN arrive at the socket.
    let connect = std::thread::scope(|s| {
        let conn = s.spawn(|| {
            c.run(|| {
                let a: SocketAddr = format!("{VIP4}:5001").parse().unwrap();
                TcpStream::connect_timeout(&a, Duration::from_millis(1500)).is_ok()
            })
            .unwrap()
        });
        send("a");
        let got = std::cell::RefCell::new(Vec::<Parsed>::new());
        pump(
            &mut worker,
            || {
                let g = got.borrow();
                g.iter().filter(|p| p.proto == 17).count() >= 8 && g.iter().any(|p| p.proto == 6)
            },
            |port, f| {
                assert_eq!(port, 0);
                if let Some(p) = parse(f.data()) {
                    got.borrow_mut().push(p);
                }
                Disposition::Drop
            },
        );
        let got = got.into_inner();
        let mut udp: Vec<String> = got
            .iter()
            .filter(|p| p.proto == 17)
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect();
        udp.sort();
        let mut want: Vec<String> = (0..4)
            .flat_map(|i| [format!("av4-{i}"), format!("av6-{i}")])
            .collect();
        want.sort();
        assert_eq!(udp, want, "exactly the steered UDP datagrams reach AF_XDP");
        assert!(got
            .iter()
            .filter(|p| p.proto == 17)
            .all(|p| p.dport == 5000));
        assert!(got.iter().filter(|p| p.proto == 17 && p.v6).count() == 4);
        let syn = got
            .iter()
            .find(|p| p.proto == 6)
            .expect("TCP SYN at the socket");
        assert_eq!((syn.dport, syn.tcp_flags & 0x12), (5001, 0x02));
        conn.join().unwrap()
    });
    assert!(
        !connect,
        "the SYN went to xvs, not to the kernel's listener"
    );

    // The non-steered port reached the kernel; the steered ones did not.
    let others = recv_all(&other, 4);
    assert_eq!(others.len(), 4);
    assert!(
        nothing_waiting(&u4) && nothing_waiting(&u6),
        "steered datagrams must not reach the kernel"
    );
    let st = iface.steer_stats().unwrap();
    assert!(st.redirected >= 9, "{st:?}");
    assert!(st.passed >= 4, "{st:?}");

    // 2. Keys removed: the same traffic reaches the kernel.
    for k in keys() {
        assert!(steer.remove(k).unwrap());
    }
    assert!(steer.is_empty());
    // Drain what arrived while the keys were in place (SYN retransmissions).
    while worker.process_batch(|_, _| Disposition::Drop) > 0 {}
    let rx_before = worker.stats().rx;
    send("b");
    u4.set_nonblocking(false).unwrap();
    u6.set_nonblocking(false).unwrap();
    let mut v4: Vec<_> = recv_all(&u4, 4)
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    let mut v6: Vec<_> = recv_all(&u6, 4)
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    v4.sort();
    v6.sort();
    assert_eq!(v4, ["bv4-0", "bv4-1", "bv4-2", "bv4-3"]);
    assert_eq!(v6, ["bv6-0", "bv6-1", "bv6-2", "bv6-3"]);
    assert_eq!(recv_all(&other, 4).len(), 4);
    let ok = c
        .run(|| {
            let a: SocketAddr = format!("{VIP4}:5001").parse().unwrap();
            TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok()
        })
        .unwrap();
    assert!(ok, "TCP reaches the kernel once the key is gone");
    drop(tcp);
    worker.process_batch(|_, _| Disposition::Drop);
    assert_eq!(worker.stats().rx, rx_before, "nothing more reached AF_XDP");
}

#[test]
fn steering_native_xdp() {
    root();
    steering("stn", Backend::XdpNative);
}

#[test]
fn steering_generic_xdp() {
    root();
    steering("stg", Backend::XdpGeneric);
}
