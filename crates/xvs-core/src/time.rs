//! Time as the engine sees it: a monotonic nanosecond count passed in by the caller.
//!
//! xvs-core never reads a clock itself (sans-IO): the daemon reads one per batch and
//! tests drive a [`ManualClock`], so expiry and persistence are deterministic in tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point on a monotonic clock, in nanoseconds since an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `s` seconds after the origin.
    #[inline]
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000_000)
    }

    /// A time `ms` milliseconds after the origin.
    #[inline]
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1_000_000)
    }

    /// Whole seconds since the origin.
    #[inline]
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// Whole milliseconds since the origin.
    #[inline]
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This time plus `s` seconds.
    #[inline]
    pub const fn add_secs(self, s: u64) -> Time {
        Time(self.0 + s * 1_000_000_000)
    }

    /// Nanoseconds from `earlier` to `self`, 0 if `earlier` is later.
    #[inline]
    pub const fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The coarse time of connection timers: 10 ms ticks, wrapping (compare
/// with [`tick_after`]), so that an expiry fits the entry's 32-bit field.
pub type Tick = u32;
/// Nanoseconds per tick.
pub const TICK_NS: u64 = 10_000_000;

/// The tick of a time.
#[inline]
pub fn tick_of(t: Time) -> Tick {
    (t.0 / TICK_NS) as u32
}

/// Ticks in `secs` seconds (saturating).
#[inline]
pub fn secs_to_ticks(secs: u32) -> u32 {
    secs.saturating_mul(100)
}

/// True when tick `a` is after tick `b` (wrapping, like the kernel's `time_after`).
#[inline]
pub fn tick_after(a: Tick, b: Tick) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// A source of [`Time`]; the daemon uses a monotonic clock, tests a [`ManualClock`].
pub trait Clock: Send + Sync {
    /// The time now.
    fn now(&self) -> Time;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: Time) -> Self {
        ManualClock(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `s` seconds.
    pub fn advance_secs(&self, s: u64) {
        self.0.fetch_add(s * 1_000_000_000, Ordering::Relaxed);
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_millis(&self, ms: u64) {
        self.0.fetch_add(ms * 1_000_000, Ordering::Relaxed);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Time) {
        self.0.store(t.0, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_wrap() {
        assert!(tick_after(5, 3));
        assert!(!tick_after(3, 5));
        assert!(tick_after(2, u32::MAX - 2));
    }
}
