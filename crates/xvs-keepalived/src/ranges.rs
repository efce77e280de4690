//! Address ranges of `virtual_server_group` and `local_address_group`:
//! `10.0.0.3-10` (last byte, both ends included), `10.0.0.250-10.0.1.10`,
//! `10.0.0.8/29`, and the IPv6 forms (`fd00::1-ff` on the last 16 bits).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most addresses one range may expand to (xvs holds 4096 services).
pub const MAX_RANGE: u128 = 4096;

/// Expands one range; an error says why it is not one.
pub fn expand(s: &str) -> Result<Vec<IpAddr>, String> {
    if let Some((a, len)) = s.split_once('/') {
        let addr: IpAddr = a.parse().map_err(|_| format!("bad address `{a}'"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|&l| l <= bits)
            .ok_or_else(|| format!("bad prefix length `{len}'"))?;
        let host_bits = bits - len;
        if host_bits > 12 {
            return Err(format!("range of more than {MAX_RANGE} addresses"));
        }
        let n = 1u128 << host_bits;
        let base = to_u128(addr) & !(n - 1);
        return span(addr, base, base + n - 1);
    }
    if let Some((a, b)) = s.split_once('-') {
        let first: IpAddr = a.parse().map_err(|_| format!("bad address `{a}'"))?;
        let last = if let Ok(l) = b.parse::<IpAddr>() {
            l
        } else {
            // Only the last byte (IPv4, decimal) or 16 bits (IPv6, hex) given.
            match first {
                IpAddr::V4(v4) => {
                    let n: u8 = b.parse().map_err(|_| format!("bad range end `{b}'"))?;
                    let mut o = v4.octets();
                    o[3] = n;
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                IpAddr::V6(v6) => {
                    let n =
                        u16::from_str_radix(b, 16).map_err(|_| format!("bad range end `{b}'"))?;
                    let mut seg = v6.segments();
                    seg[7] = n;
                    IpAddr::V6(Ipv6Addr::from(seg))
                }
            }
        };
        if first.is_ipv4() != last.is_ipv4() {
            return Err("range ends are of different families".into());
        }
        return span(first, to_u128(first), to_u128(last));
    }
    let a: IpAddr = s.parse().map_err(|_| format!("bad address `{s}'"))?;
    Ok(vec![a])
}

fn span(like: IpAddr, lo: u128, hi: u128) -> Result<Vec<IpAddr>, String> {
    if hi < lo {
        return Err("range ends before it starts".into());
    }
    if hi - lo >= MAX_RANGE {
        return Err(format!("range of more than {MAX_RANGE} addresses"));
    }
    Ok((lo..=hi).map(|v| from_u128(like, v)).collect())
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: Vec<IpAddr>) -> Vec<String> {
        v.into_iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn forms() {
        assert_eq!(
            strs(expand("192.168.200.3-5").unwrap()),
            ["192.168.200.3", "192.168.200.4", "192.168.200.5"]
        );
        assert_eq!(
            strs(expand("10.0.0.254-10.0.1.1").unwrap()),
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert_eq!(expand("10.0.0.9/30").unwrap().len(), 4);
        assert_eq!(strs(expand("10.0.0.9/30").unwrap())[0], "10.0.0.8");
        assert_eq!(
            strs(expand("fd77::a-c").unwrap()),
            ["fd77::a", "fd77::b", "fd77::c"]
        );
        assert_eq!(strs(expand("fd77::1").unwrap()), ["fd77::1"]);
        assert!(expand("10.0.0.5-3").is_err());
        assert!(expand("10.0.0.0/8").is_err());
        assert!(expand("10.0.0.1-fd77::1").is_err());
        assert!(expand("nope").is_err());
    }
}
