//! ipvsadm's listing order: `ipvs_cmp_services`/`ipvs_cmp_dests` under glibc's
//! `qsort`, quirks included.
//!
//! The comparators return a 32-bit wrapped difference (`(int)(ntohl(a) -
//! ntohl(b))`), so 10.0.0.1 sorts *after* 192.168.0.1 (the difference is
//! above 2^31) and the order is not even transitive. With such a comparator
//! the result depends on the sorting algorithm, so this is glibc's: a top-down
//! merge sort that splits at n/2 and takes from the left run on `<= 0`.

use std::cmp::Ordering;
use std::net::IpAddr;
use xvs_core::service::{Af, ServiceKey};

/// glibc's `msort_with_tmp` with an `int`-returning comparator.
pub fn glibc_qsort<T: Clone>(v: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    let (left, right) = v.split_at_mut(n1);
    glibc_qsort(left, cmp);
    glibc_qsort(right, cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]) <= 0 {
            merged.push(left[i].clone());
            i += 1;
        } else {
            merged.push(right[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    v.clone_from_slice(&merged);
}

/// An address as the kernel's `union nf_inet_addr`: four host-order words
/// (`ntohl` of each), IPv4 in the first.
fn words(a: &IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(v) => [u32::from(*v), 0, 0, 0],
        IpAddr::V6(v) => {
            let o = v.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The address part of both comparators: word by word for IPv6 (chosen by the
/// first entry's family), one word for IPv4; each a wrapped difference.
fn cmp_addr(af1: Af, a1: &IpAddr, a2: &IpAddr) -> i32 {
    let (w1, w2) = (words(a1), words(a2));
    if af1 == Af::V6 {
        let mut r = 0;
        for i in 0..4 {
            if r != 0 {
                break;
            }
            r = w1[i].wrapping_sub(w2[i]) as i32;
        }
        r
    } else {
        w1[0].wrapping_sub(w2[0]) as i32
    }
}

/// `AF_INET`/`AF_INET6` values.
fn af_num(af: Af) -> i32 {
    match af {
        Af::V4 => 2,
        Af::V6 => 10,
    }
}

/// What `ipvs_cmp_services` reads of a service entry: fwmark, af, protocol
/// (ipvsadm sends TCP for fwmark services), address (zero for fwmark), port.
fn svc_fields(k: &ServiceKey) -> (u32, Af, i32, IpAddr, u16) {
    match *k {
        ServiceKey::Addr { proto, addr, port } => {
            (0, Af::of(&addr), proto.number() as i32, addr, port)
        }
        ServiceKey::Fwmark { mark, af } => {
            let zero = match af {
                Af::V4 => IpAddr::V4(0.into()),
                Af::V6 => IpAddr::V6(0u128.into()),
            };
            (mark, af, 6, zero, 0)
        }
    }
}

/// `ipvs_cmp_services`.
pub fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let (m1, af1, p1, a1, port1) = svc_fields(a);
    let (m2, af2, p2, a2, port2) = svc_fields(b);
    let r = m1.wrapping_sub(m2) as i32;
    if r != 0 {
        return r;
    }
    let r = af_num(af1) - af_num(af2);
    if r != 0 {
        return r;
    }
    let r = p1 - p2;
    if r != 0 {
        return r;
    }
    let r = cmp_addr(af1, &a1, &a2);
    if r != 0 {
        return r;
    }
    i32::from(port1) - i32::from(port2)
}

/// `ipvs_cmp_dests`.
pub fn cmp_dests(a: (&IpAddr, u16), b: (&IpAddr, u16)) -> i32 {
    let r = cmp_addr(Af::of(a.0), a.0, b.0);
    if r != 0 {
        return r;
    }
    i32::from(a.1) - i32::from(b.1)
}

/// A comparator's sign as an [`Ordering`] (for tests and callers that want one).
pub fn ordering(r: i32) -> Ordering {
    r.cmp(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use xvs_core::service::Protocol;

    fn tcp(a: [u8; 4], port: u16) -> ServiceKey {
        ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            port,
        }
    }

    #[test]
    fn wrapped_difference_puts_10_after_192() {
        // 10.0.0.1 - 192.168.0.1 wraps to a positive int.
        assert!(cmp_services(&tcp([10, 0, 0, 1], 80), &tcp([192, 168, 0, 1], 80)) > 0);
        // Close addresses compare normally.
        assert!(cmp_services(&tcp([10, 0, 0, 1], 80), &tcp([10, 0, 0, 2], 80)) < 0);
        assert!(cmp_services(&tcp([10, 0, 0, 1], 443), &tcp([10, 0, 0, 1], 80)) > 0);
    }

    #[test]
    fn fwmark_udp_and_family_order() {
        let udp = ServiceKey::Addr {
            proto: Protocol::Udp,
            addr: IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
            port: 53,
        };
        let fw = ServiceKey::Fwmark {
            mark: 5,
            af: Af::V4,
        };
        let fw6 = ServiceKey::Fwmark {
            mark: 5,
            af: Af::V6,
        };
        let big = ServiceKey::Fwmark {
            mark: 0x8000_0001,
            af: Af::V4,
        };
        assert!(cmp_services(&tcp([9, 9, 9, 9], 1), &udp) < 0);
        assert!(cmp_services(&udp, &fw) < 0);
        assert!(cmp_services(&fw, &fw6) < 0);
        // 0 - 0x80000001 wraps positive: a huge mark sorts before address services.
        assert!(cmp_services(&big, &udp) < 0);
    }

    #[test]
    fn merge_sort_is_glibcs() {
        // Plain integers: sorted, stable.
        let mut v = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        glibc_qsort(&mut v, &|x: &(i32, char), y: &(i32, char)| x.0 - y.0);
        assert_eq!(v, vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
        // The non-transitive address order, worked by hand through msort:
        // [192.168.0.1, 10.0.0.1, 172.16.0.1] splits into [192] | [10, 172];
        // [10, 172]: 10-172 wraps? 0x0a000001-0xac100001 = 0x5df00000 > 0, so
        // 172 first; merge [192] with [172, 10]: 192-172 > 0 → 172;
        // 192-10 = 0xb6a80000 < 0 → 192, then 10.
        let a = |x: [u8; 4]| IpAddr::V4(Ipv4Addr::from(x));
        let mut d = vec![a([192, 168, 0, 1]), a([10, 0, 0, 1]), a([172, 16, 0, 1])];
        glibc_qsort(&mut d, &|x: &IpAddr, y: &IpAddr| {
            cmp_dests((x, 80), (y, 80))
        });
        assert_eq!(
            d,
            vec![a([172, 16, 0, 1]), a([192, 168, 0, 1]), a([10, 0, 0, 1])]
        );
    }
}
