//! The DoS and behaviour knobs by name (xvs extension, `xvsadm --knob
//! NAME=VALUE`, `xvsadm -L --knobs`, and `[knobs]` of xvsd's config): the
//! kernel's `net.ipv4.vs.*` sysctls of the same names, with the ranges their
//! sysctl handlers take.
//!
//! - `drop_entry`, `drop_packet`, `secure_tcp`: 0 to 3, as
//!   `proc_do_defense_mode` (anything else is EINVAL);
//! - `expire_nodest_conn`, `expire_quiescent_template`, `sloppy_tcp`: any
//!   `int` (`proc_dointvec`), non-zero meaning on; xvs keeps and lists 0 or 1;
//! - `conn_reuse_mode`, `am_droprate`, `amemthresh`: an `int` too, but xvs
//!   takes 0 to 2147483647 only: the kernel takes a negative value but it
//!   means nothing for these (amemthresh is clamped to 0, a negative drop rate
//!   is no rate, conn_reuse_mode is a set of bits).

use xvs_core::engine::{Knobs, ReuseMode};

/// The knobs, in the order they are listed (that of configs/xvsd.toml).
pub const NAMES: [&str; 9] = [
    "expire_nodest_conn",
    "expire_quiescent_template",
    "conn_reuse_mode",
    "sloppy_tcp",
    "secure_tcp",
    "drop_entry",
    "drop_packet",
    "am_droprate",
    "amemthresh",
];

/// The prefix of the kernel's sysctls, accepted before a name so that
/// `sysctl` lines paste as they are.
pub const SYSCTL_PREFIX: &str = "net.ipv4.vs.";

/// What values a knob takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// Any int; non-zero is on.
    Bool,
    /// 0 to 3 (off, automatic, automatic and on, always on).
    Mode,
    /// 0 to INT_MAX.
    Count,
}

fn range(name: &str) -> Option<Range> {
    Some(match name {
        "expire_nodest_conn" | "expire_quiescent_template" | "sloppy_tcp" => Range::Bool,
        "secure_tcp" | "drop_entry" | "drop_packet" => Range::Mode,
        "conn_reuse_mode" | "am_droprate" | "amemthresh" => Range::Count,
        _ => return None,
    })
}

/// The knob's name without the sysctl prefix.
pub fn name(n: &str) -> &str {
    n.strip_prefix(SYSCTL_PREFIX).unwrap_or(n)
}

/// Checks `name = v` as the kernel's sysctl handler would; the error says
/// what the knob takes.
pub fn check(n: &str, v: i64) -> Result<(), String> {
    let n = name(n);
    let Some(r) = range(n) else {
        return Err(format!("unknown knob `{n}' (one of {})", NAMES.join(", ")));
    };
    let (lo, hi, what) = match r {
        Range::Bool => (
            i32::MIN as i64,
            i32::MAX as i64,
            "0 (off) or 1 (on)".to_string(),
        ),
        Range::Mode => (0, 3, "0 to 3".to_string()),
        Range::Count => (0, i32::MAX as i64, format!("0 to {}", i32::MAX)),
    };
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("Invalid argument: {n} takes {what}, not {v}"))
    }
}

/// Sets knob `n` of `k` to `v`, checked first (nothing changes on error).
pub fn set(k: &mut Knobs, n: &str, v: i64) -> Result<(), String> {
    check(n, v)?;
    let n = name(n);
    // In range: the casts below do not truncate.
    match n {
        "expire_nodest_conn" => k.expire_nodest_conn = v != 0,
        "expire_quiescent_template" => k.expire_quiescent_template = v != 0,
        "sloppy_tcp" => k.sloppy_tcp = v != 0,
        "conn_reuse_mode" => k.conn_reuse_mode = ReuseMode(v as u32),
        "secure_tcp" => k.secure_tcp = v as u8,
        "drop_entry" => k.drop_entry = v as u8,
        "drop_packet" => k.drop_packet = v as u8,
        "am_droprate" => k.am_droprate = v as u32,
        "amemthresh" => k.amemthresh = v as u32,
        _ => unreachable!("check() knows every name"),
    }
    Ok(())
}

/// Every knob of `k` by name, in [`NAMES`] order.
pub fn list(k: &Knobs) -> Vec<(String, i64)> {
    NAMES
        .iter()
        .map(|&n| {
            let v: i64 = match n {
                "expire_nodest_conn" => k.expire_nodest_conn.into(),
                "expire_quiescent_template" => k.expire_quiescent_template.into(),
                "sloppy_tcp" => k.sloppy_tcp.into(),
                "conn_reuse_mode" => k.conn_reuse_mode.0.into(),
                "secure_tcp" => k.secure_tcp.into(),
                "drop_entry" => k.drop_entry.into(),
                "drop_packet" => k.drop_packet.into(),
                "am_droprate" => k.am_droprate.into(),
                _ => k.amemthresh.into(),
            };
            (n.to_string(), v)
        })
        .collect()
}

/// Checks every knob of `k` (a config file's `[knobs]`, whose types alone
/// let out-of-range values through); the first wrong one.
pub fn validate(k: &Knobs) -> Result<(), (&'static str, String)> {
    for ((n, v), &name) in list(k).iter().zip(NAMES.iter()) {
        check(n, *v).map_err(|e| (name, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_sysctl_handlers() {
        for n in ["secure_tcp", "drop_entry", "drop_packet"] {
            for v in 0..=3 {
                check(n, v).unwrap();
            }
            for v in [-1, 4, 255, 256] {
                let e = check(n, v).unwrap_err();
                assert_eq!(e, format!("Invalid argument: {n} takes 0 to 3, not {v}"));
            }
        }
        for n in [
            "sloppy_tcp",
            "expire_nodest_conn",
            "expire_quiescent_template",
        ] {
            for v in [i32::MIN as i64, -1, 0, 1, 7, i32::MAX as i64] {
                check(n, v).unwrap();
            }
            assert!(check(n, i32::MAX as i64 + 1).is_err());
        }
        for n in ["conn_reuse_mode", "am_droprate", "amemthresh"] {
            check(n, 0).unwrap();
            check(n, i32::MAX as i64).unwrap();
            assert!(check(n, -1).is_err());
            assert!(check(n, i32::MAX as i64 + 1).is_err());
        }
        assert!(check("sloppy", 1)
            .unwrap_err()
            .starts_with("unknown knob `sloppy'"));
        assert!(
            check("sync_period", 1).is_err(),
            "a sync knob is not one of these"
        );
    }

    #[test]
    fn set_and_list_round_trip() {
        let mut k = Knobs::default();
        assert_eq!(
            list(&k),
            NAMES
                .iter()
                .zip([0, 0, 1, 0, 0, 0, 0, 10, 1024])
                .map(|(n, v)| (n.to_string(), v))
                .collect::<Vec<_>>(),
            "the kernel's defaults"
        );
        for (i, n) in NAMES.iter().enumerate() {
            let v = if range(n) == Some(Range::Mode) {
                3
            } else {
                1 + i as i64 % 2
            };
            set(&mut k, n, v).unwrap();
        }
        set(&mut k, "net.ipv4.vs.amemthresh", 2_000_000).unwrap();
        set(&mut k, "sloppy_tcp", 5).unwrap();
        assert!(k.sloppy_tcp && k.expire_nodest_conn && k.expire_quiescent_template);
        assert_eq!((k.secure_tcp, k.drop_entry, k.drop_packet), (3, 3, 3));
        assert_eq!(
            (k.conn_reuse_mode.0, k.am_droprate, k.amemthresh),
            (1, 2, 2_000_000)
        );
        let listed = list(&k);
        assert_eq!(
            listed[3],
            ("sloppy_tcp".to_string(), 1),
            "on is listed as 1"
        );
        // What is listed sets the same knobs again.
        let mut again = Knobs::default();
        for (n, v) in &listed {
            set(&mut again, n, *v).unwrap();
        }
        assert_eq!(again, k);
        // A refused value changes nothing.
        let before = k;
        assert!(set(&mut k, "drop_entry", 4).is_err());
        assert_eq!(k, before);
        validate(&k).unwrap();
        k.drop_packet = 9;
        assert_eq!(validate(&k).unwrap_err().0, "drop_packet");
    }
}
