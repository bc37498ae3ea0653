//! Passive health of an upstream node: nothing probes the nodes, the traffic is the probe.
//! A node that refuses connections so many times in a row is ejected for a while, so that
//! requests stop waiting on a node that is down; one success clears the count.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ejection deadlines are kept as milliseconds since this instant, so that checking one on
/// every pick is an atomic load rather than a lock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX)
}

/// Now, in the unit [`PassiveHealth::is_ejected`] compares: read once per pick, not per node.
pub(super) fn now_ms() -> u64 {
    millis_since_epoch(Instant::now())
}

/// One node's failure count and ejection deadline.
#[derive(Debug, Default)]
pub(super) struct PassiveHealth {
    consecutive_failures: AtomicU32,
    /// Ejected until this many milliseconds after `EPOCH`; 0 when never ejected.
    ejected_until_ms: AtomicU64,
}

impl PassiveHealth {
    pub(super) fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    pub(super) fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure to connect; true when it ejects the node (`eject_after` in a row),
    /// for `ejection_time`.
    pub(super) fn record_connect_failure(&self, eject_after: u32, ejection_time: Duration) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < eject_after {
            return false;
        }
        let until = millis_since_epoch(Instant::now() + ejection_time);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ejected_after_failures_in_a_row_and_a_success_clears_the_count() {
        let health = PassiveHealth::default();
        let minute = Duration::from_secs(60);
        assert!(!health.record_connect_failure(2, minute));
        health.record_success();
        assert!(
            !health.record_connect_failure(2, minute),
            "the count restarted"
        );
        assert!(!health.is_ejected(now_ms()));
        assert!(health.record_connect_failure(2, minute));
        assert!(health.is_ejected(now_ms()));
        assert!(!health.is_ejected(now_ms() + 61_000), "the ejection ends");
    }
}
