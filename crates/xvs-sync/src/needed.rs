//! The master's decision to sync a connection after a packet:
//! `ip_vs_sync_conn_needed()` with the checks `ip_vs_sync_conn()` makes
//! before it, and the sysctl knobs it reads.
//!
//! Time is in milliseconds, standing for the kernel's jiffies at HZ=1000;
//! values may wrap like jiffies do. The kernel keeps, per connection,
//! `old_state` (state at the last sync) and `sync_endtime` (when the synced
//! copy would expire, rounded down to 4 so that its two low bits count the
//! retries sent for it); the decision returns both, updated when it says send.
//!
//! How the kernel calls it: after each packet from the client
//! (`ip_vs_in_hook`), with `pkts` the connection's incremented packet count,
//! or `sync_threshold` for a one-packet connection. After a connection, its
//! controlling connection is considered too (`cp->control`), with `pkts` the
//! template's incremented count, or `sync_threshold` for a non-template
//! controller. In version 1 a one-packet connection is skipped but its
//! template is still considered; in version 0 (`ip_vs_sync_conn_v0`) a
//! one-packet or non-IPv4 connection ends it there, template included.

use crate::conn::Af;
use crate::flags::{proto, sctp_state, tcp_state, ConnFlags};
use crate::wire::SyncVersion;
use thiserror::Error;

/// `HZ` in the units of this module (milliseconds).
pub const HZ: u64 = 1000;

/// `DEFAULT_SYNC_THRESHOLD`.
pub const DEFAULT_SYNC_THRESHOLD: u32 = 3;
/// `DEFAULT_SYNC_PERIOD`.
pub const DEFAULT_SYNC_PERIOD: u32 = 50;
/// `DEFAULT_SYNC_RETRIES` (the sysctl allows 0..=3).
pub const DEFAULT_SYNC_RETRIES: u8 = 0;
/// `IPVS_SYNC_FLUSH_TIME`: a partly filled message is sent after this long.
pub const SYNC_FLUSH_TIME_MS: u64 = 2 * HZ;
/// `IPVS_SYNC_CHECK_PERIOD`: how often the master thread looks for one.
pub const SYNC_CHECK_PERIOD_MS: u64 = HZ;
/// `IPVS_SYNC_SEND_DELAY`: delay before waking the sender for a queued message.
pub const SYNC_SEND_DELAY_MS: u64 = HZ / 50;
/// `IPVS_SYNC_WAKEUP_RATE`: the sender is woken at once every this many messages.
pub const SYNC_WAKEUP_RATE: u32 = 8;
/// `IPVS_SYNC_QLEN_MAX`, the queue limit without sysctls; with them the
/// kernel's default `sync_qlen_max` is a 32nd of the free buffer pages.
pub const SYNC_QLEN_MAX: usize = SYNC_WAKEUP_RATE as usize * 4;

/// The sync sysctls (`net.ipv4.vs.*`) the decision and the encoder read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncKnobs {
    /// `sync_threshold[0]`: a connection is synced when it has seen this
    /// many packets (then every `sync_period` packets).
    pub sync_threshold: u32,
    /// `sync_threshold[1]`: 0 syncs once, at the threshold.
    pub sync_period: u32,
    /// `sync_refresh_period` (the sysctl is in seconds; here ms): when
    /// non-zero, a connection is not synced again before its synced copy's
    /// expiry moves by this much (or half its timeout, at least 10 s), bar
    /// `sync_retries` retries spaced by an eighth of it.
    pub sync_refresh_period_ms: u64,
    /// `sync_retries`: 0..=3.
    pub sync_retries: u8,
    /// `sync_persist_mode`: connections controlled by a persistence
    /// template are not synced (the template is).
    pub sync_persist_mode: bool,
    /// `sync_version`.
    pub sync_version: SyncVersion,
}

impl Default for SyncKnobs {
    fn default() -> Self {
        Self {
            sync_threshold: DEFAULT_SYNC_THRESHOLD,
            sync_period: DEFAULT_SYNC_PERIOD,
            sync_refresh_period_ms: 0,
            sync_retries: DEFAULT_SYNC_RETRIES,
            sync_persist_mode: false,
            sync_version: SyncVersion::V1,
        }
    }
}

/// A knob value the kernel's sysctl handlers refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KnobError {
    #[error("sync_threshold {threshold} must be below sync_period {period} (or the period 0)")]
    ThresholdNotBelowPeriod { threshold: u32, period: u32 },
    #[error("sync_retries {0} is out of 0..3")]
    Retries(u8),
    #[error("{0} does not fit the kernel's int")]
    TooLarge(&'static str),
}

impl SyncKnobs {
    /// The checks of `proc_do_sync_threshold` and the 0..3 bound of `sync_retries`.
    pub fn validate(&self) -> Result<(), KnobError> {
        if self.sync_threshold > i32::MAX as u32 {
            return Err(KnobError::TooLarge("sync_threshold"));
        }
        if self.sync_period > i32::MAX as u32 {
            return Err(KnobError::TooLarge("sync_period"));
        }
        if self.sync_period != 0 && self.sync_threshold >= self.sync_period {
            return Err(KnobError::ThresholdNotBelowPeriod {
                threshold: self.sync_threshold,
                period: self.sync_period,
            });
        }
        if self.sync_retries > 3 {
            return Err(KnobError::Retries(self.sync_retries));
        }
        Ok(())
    }
}

/// What the decision reads of a connection (or template).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnSyncState {
    pub protocol: u8,
    pub af: Af,
    pub flags: ConnFlags,
    pub state: u16,
    /// State when last synced (`cp->old_state`; a new entry has its initial state).
    pub old_state: u16,
    /// Current timeout (`cp->timeout`), ms.
    pub timeout_ms: u64,
    /// `cp->sync_endtime` (0 for a new entry).
    pub sync_endtime: u64,
    /// Controlled, directly or up the chain, by a persistence template.
    pub in_persistence: bool,
}

/// The outcome; `old_state` and `sync_endtime` are the connection's new
/// values (unchanged when `send` is false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncDecision {
    pub send: bool,
    pub old_state: u16,
    pub sync_endtime: u64,
}

/// `time_before(a, b)` on wrapping counters.
fn time_before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

const fn bit(s: u16) -> u32 {
    if s < 32 {
        1 << s
    } else {
        0
    }
}

const TCP_SYNCED: u32 = bit(tcp_state::ESTABLISHED)
    | bit(tcp_state::FIN_WAIT)
    | bit(tcp_state::CLOSE)
    | bit(tcp_state::CLOSE_WAIT)
    | bit(tcp_state::TIME_WAIT);

const SCTP_SYNCED: u32 = bit(sctp_state::ESTABLISHED)
    | bit(sctp_state::SHUTDOWN_SENT)
    | bit(sctp_state::SHUTDOWN_RECEIVED)
    | bit(sctp_state::SHUTDOWN_ACK_SENT)
    | bit(sctp_state::CLOSED);

/// Should `c` be synced after this packet (`pkts` as described in the
/// module docs), at `now_ms`? Includes `ip_vs_sync_conn`'s own skips:
/// one-packet connections, and non-IPv4 ones when sending version 0.
pub fn sync_conn_needed(c: &ConnSyncState, pkts: u32, now_ms: u64, k: &SyncKnobs) -> SyncDecision {
    let no = SyncDecision {
        send: false,
        old_state: c.old_state,
        sync_endtime: c.sync_endtime,
    };
    if c.flags.is_one_packet() {
        return no;
    }
    if k.sync_version == SyncVersion::V0 && c.af != Af::V4 {
        return no;
    }
    let orig = c.sync_endtime;
    let mut n = now_ms.wrapping_add(c.timeout_ms) & !3;
    let set = |n: u64| SyncDecision {
        send: true,
        old_state: c.state,
        sync_endtime: n,
    };

    // Check if we sync in the current state; a state change forces a send,
    // at once unless it is into ESTABLISHED (then the packet rules apply).
    let force;
    if c.flags.is_template() {
        force = false;
    } else if k.sync_persist_mode && c.in_persistence {
        return no;
    } else if c.protocol == proto::TCP {
        if bit(c.state) & TCP_SYNCED == 0 {
            return no;
        }
        force = c.state != c.old_state;
        if force && c.state != tcp_state::ESTABLISHED {
            return set(n);
        }
    } else if c.protocol == proto::SCTP {
        if bit(c.state) & SCTP_SYNCED == 0 {
            return no;
        }
        force = c.state != c.old_state;
        if force && c.state != sctp_state::ESTABLISHED {
            return set(n);
        }
    } else {
        // UDP and other single-state protocols.
        force = false;
    }

    let refresh = k.sync_refresh_period_ms;
    if refresh > 0 {
        let diff = (n.wrapping_sub(orig) as i64).unsigned_abs();
        let min_diff = (c.timeout_ms >> 1).max(10 * HZ);
        // Below both the refresh period and half the timeout: the synced
        // copy is still fresh; only retries may go.
        if diff < refresh.min(min_diff) {
            let retries = orig & 3;
            if retries >= u64::from(k.sync_retries) {
                return no;
            }
            if time_before(
                now_ms,
                orig.wrapping_sub(c.timeout_ms).wrapping_add(refresh >> 3),
            ) {
                return no;
            }
            n |= retries + 1;
        }
    }
    if k.sync_period > 0 {
        if !c.flags.is_template() && pkts % k.sync_period != k.sync_threshold {
            return no;
        }
    } else if refresh == 0 && pkts != k.sync_threshold {
        return no;
    }
    // The kernel's cmpxchg cannot lose here (one caller), so it reports a
    // send whether or not `force` is set.
    let _ = force;
    set(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::tcp_state::*;

    fn tcp(state: u16, old_state: u16) -> ConnSyncState {
        ConnSyncState {
            protocol: proto::TCP,
            af: Af::V4,
            flags: ConnFlags(ConnFlags::DROUTE | ConnFlags::NOOUTPUT),
            state,
            old_state,
            timeout_ms: 900 * HZ,
            sync_endtime: 0,
            in_persistence: false,
        }
    }

    fn sends(c: &ConnSyncState, pkts: u32, k: &SyncKnobs) -> bool {
        sync_conn_needed(c, pkts, 5_000_000, k).send
    }

    #[test]
    fn defaults_send_at_threshold_then_every_period() {
        let k = SyncKnobs::default();
        k.validate().unwrap();
        let c = tcp(ESTABLISHED, ESTABLISHED);
        let sent: Vec<u32> = (1..=160).filter(|&p| sends(&c, p, &k)).collect();
        // pkts % 50 == 3
        assert_eq!(sent, vec![3, 53, 103, 153]);
    }

    #[test]
    fn only_these_tcp_states_are_synced() {
        let k = SyncKnobs::default();
        for s in 0..LAST {
            let synced = matches!(s, ESTABLISHED | FIN_WAIT | CLOSE | CLOSE_WAIT | TIME_WAIT);
            // Unchanged state at the threshold: only the state set decides.
            assert_eq!(sends(&tcp(s, s), 3, &k), synced, "state {s}");
        }
    }

    #[test]
    fn state_change_forces_a_send_except_into_established() {
        let k = SyncKnobs::default();
        // SYN_RECV -> ESTABLISHED at packet 2: ES is synced by the packet rule only.
        assert!(!sends(&tcp(ESTABLISHED, SYN_RECV), 2, &k));
        assert!(sends(&tcp(ESTABLISHED, SYN_RECV), 3, &k));
        // ES -> FIN_WAIT / CLOSE_WAIT / CLOSE / TIME_WAIT: at once, whatever pkts.
        for s in [FIN_WAIT, CLOSE_WAIT, CLOSE, TIME_WAIT] {
            let d = sync_conn_needed(&tcp(s, ESTABLISHED), 17, 1000, &k);
            assert!(d.send, "state {s}");
            assert_eq!(d.old_state, s);
            assert_eq!(d.sync_endtime, (1000 + 900 * HZ) & !3);
        }
        // No change in FIN_WAIT: the packet rule again.
        assert!(!sends(&tcp(FIN_WAIT, FIN_WAIT), 17, &k));
        // A change into an unsynced state is not sent.
        assert!(!sends(&tcp(SYN_RECV, NONE), 3, &k));
    }

    #[test]
    fn sync_period_zero_sends_once_at_threshold() {
        let k = SyncKnobs {
            sync_period: 0,
            ..SyncKnobs::default()
        };
        k.validate().unwrap();
        let c = tcp(ESTABLISHED, ESTABLISHED);
        let sent: Vec<u32> = (1..=200).filter(|&p| sends(&c, p, &k)).collect();
        assert_eq!(sent, vec![3]);
    }

    #[test]
    fn udp_and_templates() {
        let k = SyncKnobs::default();
        let mut udp = tcp(0, 0);
        udp.protocol = proto::UDP;
        assert!(sends(&udp, 3, &k));
        assert!(sends(&udp, 53, &k));
        assert!(!sends(&udp, 4, &k));
        // Templates ignore the packet count when sync_period > 0.
        let mut tpl = tcp(0, 0);
        tpl.protocol = 0;
        tpl.flags = ConnFlags(ConnFlags::TEMPLATE);
        assert!((1..10).all(|p| sends(&tpl, p, &k)));
        // ... and follow it when sync_period is 0.
        let k0 = SyncKnobs {
            sync_period: 0,
            ..k
        };
        assert!(!sends(&tpl, 2, &k0));
        assert!(sends(&tpl, 3, &k0));
    }

    #[test]
    fn one_packet_persist_mode_and_v0_skips() {
        let k = SyncKnobs::default();
        let mut c = tcp(FIN_WAIT, ESTABLISHED);
        c.flags = c.flags.with(ConnFlags::ONE_PACKET);
        assert!(!sends(&c, 3, &k));
        // Controlled by a template: synced unless sync_persist_mode.
        let mut c = tcp(FIN_WAIT, ESTABLISHED);
        c.in_persistence = true;
        assert!(sends(&c, 3, &k));
        let kp = SyncKnobs {
            sync_persist_mode: true,
            ..k
        };
        assert!(!sends(&c, 3, &kp));
        // The template itself is synced in persist mode.
        let tpl = ConnSyncState {
            flags: ConnFlags(ConnFlags::TEMPLATE),
            in_persistence: false,
            ..c
        };
        assert!(sends(&tpl, 3, &kp));
        let mut c6 = tcp(FIN_WAIT, ESTABLISHED);
        c6.af = Af::V6;
        assert!(sends(&c6, 3, &k));
        let kv0 = SyncKnobs {
            sync_version: SyncVersion::V0,
            ..k
        };
        assert!(!sends(&c6, 3, &kv0));
        assert!(sends(&tcp(FIN_WAIT, ESTABLISHED), 3, &kv0));
    }

    #[test]
    fn sctp_states() {
        let k = SyncKnobs::default();
        for s in 0..sctp_state::LAST {
            let synced = matches!(
                s,
                sctp_state::ESTABLISHED
                    | sctp_state::SHUTDOWN_SENT
                    | sctp_state::SHUTDOWN_RECEIVED
                    | sctp_state::SHUTDOWN_ACK_SENT
                    | sctp_state::CLOSED
            );
            let c = ConnSyncState {
                protocol: proto::SCTP,
                ..tcp(s, s)
            };
            assert_eq!(sends(&c, 3, &k), synced, "sctp state {s}");
        }
        let c = ConnSyncState {
            protocol: proto::SCTP,
            ..tcp(sctp_state::SHUTDOWN_SENT, sctp_state::ESTABLISHED)
        };
        assert!(sends(&c, 8, &k));
    }

    #[test]
    fn refresh_period_rate_limits_and_retries() {
        // sync_refresh_period 60 s, sync_period 0: every packet may sync,
        // but not again until the synced copy's expiry moved by 60 s
        // (min(60 s, max(timeout/2, 10 s)) = 60 s for a 900 s timeout).
        let k = SyncKnobs {
            sync_period: 0,
            sync_refresh_period_ms: 60 * HZ,
            ..SyncKnobs::default()
        };
        let mut c = tcp(ESTABLISHED, ESTABLISHED);
        let t0 = 1_000_000;
        let d = sync_conn_needed(&c, 10, t0, &k);
        assert!(d.send);
        c.sync_endtime = d.sync_endtime;
        assert_eq!(c.sync_endtime & 3, 0);
        // 59 s later: still within the refresh period, no retries allowed.
        assert!(!sync_conn_needed(&c, 11, t0 + 59 * HZ, &k).send);
        // 61 s later: sent again.
        let d = sync_conn_needed(&c, 12, t0 + 61 * HZ, &k);
        assert!(d.send);
        assert_eq!(d.sync_endtime, (t0 + 61 * HZ + 900 * HZ) & !3);

        // With sync_retries 2: within the period, retries after 60/8 = 7.5 s,
        // counted in the low bits, at most 2.
        let k2 = SyncKnobs {
            sync_retries: 2,
            ..k
        };
        k2.validate().unwrap();
        let mut c = tcp(ESTABLISHED, ESTABLISHED);
        c.sync_endtime = sync_conn_needed(&c, 1, t0, &k2).sync_endtime;
        assert!(!sync_conn_needed(&c, 2, t0 + 7 * HZ, &k2).send);
        let d = sync_conn_needed(&c, 3, t0 + 8 * HZ, &k2);
        assert!(d.send);
        assert_eq!(d.sync_endtime & 3, 1);
        c.sync_endtime = d.sync_endtime;
        // The next retry is spaced from the last one (its sync_endtime).
        assert!(!sync_conn_needed(&c, 4, t0 + 15 * HZ, &k2).send);
        let d = sync_conn_needed(&c, 4, t0 + 16 * HZ, &k2);
        assert!(d.send);
        assert_eq!(d.sync_endtime & 3, 2);
        c.sync_endtime = d.sync_endtime;
        // Retries used up until the expiry moves by the refresh period.
        assert!(!sync_conn_needed(&c, 5, t0 + 40 * HZ, &k2).send);
        let d = sync_conn_needed(&c, 6, t0 + 77 * HZ, &k2);
        assert!(d.send);
        assert_eq!(d.sync_endtime & 3, 0);
    }

    #[test]
    fn refresh_period_uses_half_the_timeout_when_shorter() {
        // Timeout 30 s: min_diff = max(15 s, 10 s) = 15 s < refresh 60 s.
        let k = SyncKnobs {
            sync_period: 0,
            sync_refresh_period_ms: 60 * HZ,
            ..SyncKnobs::default()
        };
        let mut c = tcp(ESTABLISHED, ESTABLISHED);
        c.timeout_ms = 30 * HZ;
        let t0 = 50_000;
        c.sync_endtime = sync_conn_needed(&c, 1, t0, &k).sync_endtime;
        assert!(!sync_conn_needed(&c, 2, t0 + 14 * HZ, &k).send);
        assert!(sync_conn_needed(&c, 3, t0 + 16 * HZ, &k).send);
    }

    #[test]
    fn refresh_period_with_sync_period_needs_both() {
        let k = SyncKnobs {
            sync_refresh_period_ms: 60 * HZ,
            ..SyncKnobs::default()
        };
        let mut c = tcp(ESTABLISHED, ESTABLISHED);
        assert!(!sync_conn_needed(&c, 4, 0, &k).send);
        let d = sync_conn_needed(&c, 3, 0, &k);
        assert!(d.send);
        c.sync_endtime = d.sync_endtime;
        // Next period's packet, but the copy is fresh.
        assert!(!sync_conn_needed(&c, 53, 10 * HZ, &k).send);
        assert!(sync_conn_needed(&c, 53, 70 * HZ, &k).send);
    }

    #[test]
    fn knob_validation() {
        assert!(SyncKnobs::default().validate().is_ok());
        let bad = SyncKnobs {
            sync_threshold: 50,
            ..SyncKnobs::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(KnobError::ThresholdNotBelowPeriod { .. })
        ));
        let ok = SyncKnobs {
            sync_threshold: 50,
            sync_period: 0,
            ..SyncKnobs::default()
        };
        assert!(ok.validate().is_ok());
        let bad = SyncKnobs {
            sync_retries: 4,
            ..SyncKnobs::default()
        };
        assert_eq!(bad.validate(), Err(KnobError::Retries(4)));
    }
}
