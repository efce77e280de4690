//! The daemon's monotonic clock, shared by the workers, the housekeeping
//! thread and the control plane (connection expiry compares their times).

use std::sync::OnceLock;
use std::time::Instant;
use xvs_core::time::Time;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Now, in nanoseconds since the daemon started.
pub fn now() -> Time {
    let o = ORIGIN.get_or_init(Instant::now);
    Time(o.elapsed().as_nanos() as u64)
}
