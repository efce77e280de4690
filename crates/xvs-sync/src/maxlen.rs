//! `sync_maxlen`, the largest sync message (UDP payload), as
//! `start_sync_thread()` sets it.
//!
//! Master: 1500 − IP − UDP headers whatever the interface's MTU (1472 over
//! IPv4, 1452 over IPv6), so messages cross any Ethernet path unfragmented.
//! Backup: the interface's MTU clamped to 1500..65535, less the headers; it
//! receives into a buffer of that size, so a longer datagram arrives cut and
//! then fails the size check. An explicit `--sync-maxlen` is clamped to
//! 1 (master) or 1024 (backup) .. 65535 − headers.

use crate::conn::Af;

/// Which sync daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncRole {
    Master,
    Backup,
}

/// IP + UDP header bytes for the multicast family: 28 (IPv4), 48 (IPv6).
pub const fn ip_udp_header_len(mcast_af: Af) -> u16 {
    match mcast_af {
        Af::V4 => 20 + 8,
        Af::V6 => 40 + 8,
    }
}

/// The master's default over IPv4: 1500 − 28.
pub const DEFAULT_MASTER_MAXLEN_V4: u16 = 1472;
/// The master's default over IPv6: 1500 − 48.
pub const DEFAULT_MASTER_MAXLEN_V6: u16 = 1452;

/// `sync_maxlen` for `role` over a multicast group of family `mcast_af`:
/// `requested` (0 = not given, as the kernel's `c->sync_maxlen`) clamped, or
/// the default; `dev_mtu` is the multicast interface's MTU (used by a backup).
pub fn sync_maxlen(role: SyncRole, mcast_af: Af, requested: u16, dev_mtu: u32) -> u16 {
    let hlen = ip_udp_header_len(mcast_af);
    let (mtu, min) = match role {
        SyncRole::Backup => (dev_mtu.clamp(1500, 65535) as u16, 1024),
        SyncRole::Master => (1500, 1),
    };
    if requested != 0 {
        requested.clamp(min, 65535 - hlen)
    } else {
        mtu - hlen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_defaults_ignore_the_mtu() {
        for mtu in [576, 1500, 9000, 65536] {
            assert_eq!(sync_maxlen(SyncRole::Master, Af::V4, 0, mtu), 1472);
            assert_eq!(sync_maxlen(SyncRole::Master, Af::V6, 0, mtu), 1452);
        }
        assert_eq!(DEFAULT_MASTER_MAXLEN_V4, 1472);
        assert_eq!(DEFAULT_MASTER_MAXLEN_V6, 1452);
    }

    #[test]
    fn backup_defaults_follow_the_clamped_mtu() {
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V4, 0, 1280), 1472);
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V4, 0, 9000), 8972);
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V6, 0, 9000), 8952);
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V4, 0, 100_000), 65507);
    }

    #[test]
    fn explicit_values_are_clamped() {
        assert_eq!(sync_maxlen(SyncRole::Master, Af::V4, 1, 1500), 1);
        assert_eq!(sync_maxlen(SyncRole::Master, Af::V4, 9000, 1500), 9000);
        assert_eq!(sync_maxlen(SyncRole::Master, Af::V4, 65535, 1500), 65507);
        assert_eq!(sync_maxlen(SyncRole::Master, Af::V6, 65535, 1500), 65487);
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V4, 100, 1500), 1024);
        assert_eq!(sync_maxlen(SyncRole::Backup, Af::V4, 2000, 9000), 2000);
    }
}
