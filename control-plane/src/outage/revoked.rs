//! The sessions ended recently, as this replica heard of them on the revocation stream: a
//! seal of one of them must be refused while the store cannot say so. Bounded in time (an
//! entry older than the longest inactivity timeout cannot matter: its seal would have timed
//! out first) and in count; whatever is dropped moves `known_since` forward, and a seal made
//! before `known_since` is refused, so forgetting can only refuse more, never admit more.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

#[derive(Debug, Default)]
pub struct RecentRevocations {
    /// Oldest first, as the stream delivers them.
    order: VecDeque<(SystemTime, String)>,
    /// Handle → how many entries of `order` name it.
    handles: HashMap<String, u32>,
    /// The retained stream was read and held every revocation since this time; `None`
    /// until it was read.
    complete_from: Option<SystemTime>,
    /// Revocations up to this time may have been dropped.
    forgotten_until: Option<SystemTime>,
}

impl RecentRevocations {
    /// The set is complete from `since` on (the start of the retained stream, or the epoch
    /// if the stream never lost an entry).
    pub fn loaded(&mut self, since: SystemTime) {
        self.complete_from = Some(since);
    }

    /// Events were lost (the feed fell behind the stream): only what follows `now` is known.
    pub fn lost_events(&mut self, now: SystemTime) {
        self.order.clear();
        self.handles.clear();
        self.forget_until(now);
    }

    fn forget_until(&mut self, at: SystemTime) {
        self.forgotten_until = Some(self.forgotten_until.map_or(at, |until| until.max(at)));
    }

    /// Records a revocation at `at`, then drops entries older than `retention` before `at`
    /// and the oldest ones past `max_entries`.
    pub fn record(
        &mut self,
        handle: String,
        at: SystemTime,
        retention: Duration,
        max_entries: usize,
    ) {
        *self.handles.entry(handle.clone()).or_default() += 1;
        self.order.push_back((at, handle));
        let cutoff = at.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        while let Some((oldest, _)) = self.order.front() {
            if *oldest >= cutoff && self.order.len() <= max_entries.max(1) {
                break;
            }
            let dropped_at = (*oldest).max(cutoff);
            self.forget_oldest();
            self.forget_until(dropped_at);
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, handle)) = self.order.pop_front() else {
            return;
        };
        if let Some(count) = self.handles.get_mut(&handle) {
            *count -= 1;
            if *count == 0 {
                self.handles.remove(&handle);
            }
        }
    }

    pub fn contains(&self, handle: &str) -> bool {
        self.handles.contains_key(handle)
    }

    /// Every revocation since this time is in the set; `None` until the stream was read.
    pub fn known_since(&self) -> Option<SystemTime> {
        let complete_from = self.complete_from?;
        Some(
            self.forgotten_until
                .map_or(complete_from, |until| until.max(complete_from)),
        )
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn nothing_is_known_before_the_set_is_loaded() {
        let mut revoked = RecentRevocations::default();
        revoked.record("h".into(), at(0), Duration::from_secs(60), 10);
        assert!(revoked.contains("h"));
        assert_eq!(revoked.known_since(), None);
        revoked.loaded(SystemTime::UNIX_EPOCH);
        assert_eq!(revoked.known_since(), Some(SystemTime::UNIX_EPOCH));
        // What was dropped while loading counts too.
        let mut loading = RecentRevocations::default();
        loading.record("a".into(), at(0), Duration::from_secs(60), 10);
        loading.record("b".into(), at(100), Duration::from_secs(60), 10);
        loading.loaded(SystemTime::UNIX_EPOCH);
        assert_eq!(loading.known_since(), Some(at(40)));
    }

    #[test]
    fn old_entries_go_and_move_known_since_forward() {
        let mut revoked = RecentRevocations::default();
        revoked.loaded(SystemTime::UNIX_EPOCH);
        let retention = Duration::from_secs(60);
        revoked.record("a".into(), at(0), retention, 10);
        revoked.record("b".into(), at(30), retention, 10);
        assert_eq!(revoked.known_since(), Some(SystemTime::UNIX_EPOCH));
        revoked.record("c".into(), at(100), retention, 10);
        assert!(!revoked.contains("a") && !revoked.contains("b") && revoked.contains("c"));
        assert_eq!(revoked.known_since(), Some(at(40)));
    }

    #[test]
    fn past_the_cap_the_oldest_go_and_known_since_follows() {
        let mut revoked = RecentRevocations::default();
        revoked.loaded(SystemTime::UNIX_EPOCH);
        let retention = Duration::from_secs(3600);
        for second in 0..5 {
            revoked.record(format!("h{second}"), at(second), retention, 3);
        }
        assert_eq!(revoked.len(), 3);
        assert!(!revoked.contains("h1") && revoked.contains("h2"));
        assert_eq!(revoked.known_since(), Some(at(1)));
    }

    #[test]
    fn a_handle_revoked_twice_stays_until_both_entries_go() {
        let mut revoked = RecentRevocations::default();
        revoked.loaded(SystemTime::UNIX_EPOCH);
        let retention = Duration::from_secs(60);
        revoked.record("h".into(), at(0), retention, 10);
        revoked.record("h".into(), at(50), retention, 10);
        revoked.record("x".into(), at(70), retention, 10);
        assert!(revoked.contains("h"));
        revoked.record("y".into(), at(120), retention, 10);
        assert!(!revoked.contains("h"));
        revoked.lost_events(at(130));
        assert!(!revoked.contains("y"));
        assert_eq!(revoked.known_since(), Some(at(130)));
    }
}
