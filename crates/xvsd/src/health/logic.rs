//! The decisions of keepalived's checker core, without I/O: when a checker
//! goes down (after `retry` failed retries, `delay_before_retry` apart) or
//! up (one success), what weight a real server has (misc_dynamic), when a
//! virtual server gains or loses quorum (with hysteresis), and what the table
//! should then hold (real servers, inhibited at weight 0, or the sorry
//! server instead).

use std::time::Duration;
use xvs_keepalived::{CheckSpec, RealServer, VirtualServer};

/// A checker's up/down state and its retry count (keepalived's `is_up`,
/// `has_run`, `retry_it`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub up: bool,
    pub has_run: bool,
    pub retry_it: u32,
}

impl Retry {
    /// Before the first check: up, unless alpha. The first failure takes a
    /// checker down at once (keepalived starts with `retry_it = retry`).
    pub fn new(spec: &CheckSpec) -> Retry {
        Retry {
            up: !spec.alpha,
            has_run: false,
            retry_it: spec.retry,
        }
    }

    /// Takes one result; returns the new state when it changed (or was first
    /// confirmed), and how long to wait before the next check.
    pub fn on(&mut self, ok: bool, spec: &CheckSpec) -> (Option<bool>, Duration) {
        let first = !self.has_run;
        self.has_run = true;
        if ok {
            self.retry_it = 0;
            let changed = !self.up || first;
            self.up = true;
            return (changed.then_some(true), spec.delay_loop);
        }
        if self.up || first {
            if self.retry_it < spec.retry {
                self.retry_it += 1;
                return (None, spec.delay_before_retry);
            }
            self.retry_it = 0;
            self.up = false;
            return (Some(false), spec.delay_loop);
        }
        (None, spec.delay_loop)
    }
}

/// keepalived's `real_weight`: the weight IPVS can take.
pub fn clamp_weight(w: i64) -> i32 {
    w.clamp(0, i64::from(xvs_core::service::MAX_WEIGHT)) as i32
}

/// Weight of a real server: configured, plus what misc_dynamic checkers
/// add (`exit status - 2 - configured weight` each, as keepalived adds).
pub fn effective_weight(rs: &RealServer, dynamic: impl Iterator<Item = i64>) -> i32 {
    clamp_weight(i64::from(rs.weight) + dynamic.sum::<i64>())
}

/// keepalived's `update_quorum_state`: gained at `quorum + hysteresis`,
/// lost below `quorum - hysteresis` (or at no weight at all).
pub fn next_quorum(up: bool, alive_weight: u64, vs: &VirtualServer) -> bool {
    let q = u64::from(vs.quorum);
    let h = u64::from(vs.hysteresis);
    if q == 0 {
        return true;
    }
    if !up && alive_weight >= q + h {
        true
    } else if up && (alive_weight == 0 || alive_weight < q.saturating_sub(h)) {
        false
    } else {
        up
    }
}

/// The quorum at start (keepalived's `set_quorum_states`).
pub fn initial_quorum(alive_weight: u64, vs: &VirtualServer) -> bool {
    vs.quorum == 0 || alive_weight >= u64::from(vs.quorum) + u64::from(vs.hysteresis)
}

/// The weight a real server should have in the table, or None for out.
/// With quorum lost and a sorry server, every real server leaves (to weight
/// 0 when inhibited), as keepalived replaces them with the sorry server.
pub fn rs_listed(rs: &RealServer, alive: bool, weight: i32, sorry_in_use: bool) -> Option<i32> {
    if alive && !sorry_in_use {
        Some(weight)
    } else if rs.inhibit {
        Some(0)
    } else {
        None
    }
}

/// The sorry server's weight in the table, or None for out.
pub fn sorry_listed(vs: &VirtualServer, in_use: bool) -> Option<i32> {
    let s = vs.sorry.as_ref()?;
    if in_use {
        Some(s.weight)
    } else if s.inhibit {
        Some(0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(retry: u32, alpha: bool) -> CheckSpec {
        let c = xvs_keepalived::parse_str(
            &format!(
                "virtual_server 10.77.0.1 80 {{\n real_server 10.77.1.1 80 {{\n TCP_CHECK {{\n retry {retry}\n \
                 delay_loop 10\n delay_before_retry 2\n {}\n }}\n }}\n }}",
                if alpha { "alpha" } else { "" }
            ),
            "t",
        )
        .unwrap();
        c.virtual_servers[0].real_servers[0].checks[0].spec.clone()
    }

    #[test]
    fn first_failure_is_enough_then_retries_count() {
        let s = spec(2, false);
        let mut r = Retry::new(&s);
        assert!(r.up);
        // First result a success: confirmed up, next after delay_loop.
        assert_eq!(r.on(true, &s), (Some(true), Duration::from_secs(10)));
        // Failures: two retries delay_before_retry apart, then down.
        assert_eq!(r.on(false, &s), (None, Duration::from_secs(2)));
        assert_eq!(r.on(false, &s), (None, Duration::from_secs(2)));
        assert_eq!(r.on(false, &s), (Some(false), Duration::from_secs(10)));
        // Down: failures change nothing, one success brings it back.
        assert_eq!(r.on(false, &s), (None, Duration::from_secs(10)));
        assert_eq!(r.on(true, &s), (Some(true), Duration::from_secs(10)));
        // A success in the middle of retries resets the count.
        assert_eq!(r.on(false, &s).0, None);
        assert_eq!(r.on(true, &s).0, None);
        assert_eq!(r.on(false, &s).0, None);
        assert_eq!(r.on(false, &s).0, None);
        assert_eq!(r.on(false, &s).0, Some(false));
        // At start, one failure takes it down.
        let mut r = Retry::new(&s);
        assert_eq!(r.on(false, &s).0, Some(false));
        // Alpha starts down.
        let a = spec(1, true);
        let mut r = Retry::new(&a);
        assert!(!r.up);
        assert_eq!(r.on(true, &a).0, Some(true));
    }

    #[test]
    fn quorum_with_hysteresis() {
        let c = xvs_keepalived::parse_str(
            "virtual_server 10.77.0.1 80 {\n quorum 3\n hysteresis 1\n sorry_server 10.77.1.9 80\n \
             real_server 10.77.1.1 80 {\n weight 2\n }\n real_server 10.77.1.2 80 {\n weight 2\n }\n }",
            "t",
        )
        .unwrap();
        let vs = &c.virtual_servers[0];
        assert!(initial_quorum(4, vs));
        assert!(!initial_quorum(3, vs), "gained only at quorum + hysteresis");
        // Up: kept down to quorum - hysteresis = 2.
        assert!(next_quorum(true, 2, vs));
        assert!(!next_quorum(true, 1, vs));
        // Down: regained at 4, not at 3.
        assert!(!next_quorum(false, 3, vs));
        assert!(next_quorum(false, 4, vs));
        // Sorry in use: real servers out, the sorry server in.
        let rs = &vs.real_servers[0];
        assert_eq!(rs_listed(rs, true, 2, true), None);
        assert_eq!(rs_listed(rs, true, 2, false), Some(2));
        assert_eq!(rs_listed(rs, false, 2, false), None);
        assert_eq!(sorry_listed(vs, true), Some(1));
        assert_eq!(sorry_listed(vs, false), None);
        assert_eq!(effective_weight(rs, [8i64 - 2].into_iter()), 8);
        assert_eq!(clamp_weight(-3), 0);
    }
}
