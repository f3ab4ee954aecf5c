//! Where a node's time comes from. The raft loop asks a [`Clock`] instead
//! of the system, so the simulator can run it on virtual time (the same
//! seed, the same run) and skew or jump each node's wall clock.

use std::time::Instant;

/// A node's two clocks.
pub trait Clock: Send + Sync {
    /// Monotonic time: ticks, lease deadlines, timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, stamped on the
    /// commands the node proposes itself (lease revokes). Apply never
    /// reads it: time in the state comes from the log.
    fn wall_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
