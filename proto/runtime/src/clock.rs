//! Time, injectable, so that TTL logic is tested by moving a clock rather than by sleeping.
//! Both planes read it: the control plane for the timestamps it stores, a node for the age
//! of what it has cached. A clock gives two times because they answer different questions:
//! wall-clock time is what others read (stored expiries, reported activity), and monotonic
//! time says how long ago something happened even when the system clock is set meanwhile.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Wall-clock time: for timestamps stored or sent to others.
    fn now(&self) -> SystemTime;
    /// Monotonic time: for ages and deadlines within this process.
    fn instant(&self) -> Instant;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; both of its times move together.
#[derive(Debug)]
pub struct ManualClock(Mutex<(SystemTime, Instant)>);

impl ManualClock {
    /// A clock showing `start` as its wall-clock time.
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new((start, Instant::now())))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        now.0 += by;
        now.1 += by;
    }

    fn read(&self) -> (SystemTime, Instant) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.read().0
    }

    fn instant(&self) -> Instant {
        self.read().1
    }
}

/// Milliseconds since the Unix epoch, the unit timestamps are stored in.
pub fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn from_millis(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_its_times_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(start);
        let (wall, monotonic) = (clock.now(), clock.instant());
        std::thread::yield_now();
        assert_eq!(clock.now(), wall);
        assert_eq!(clock.instant(), monotonic);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        assert_eq!(clock.instant() - monotonic, Duration::from_secs(90));
    }

    #[test]
    fn stored_milliseconds_round_trip() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_234_567);
        assert_eq!(from_millis(to_millis(at)), at);
        assert_eq!(
            to_millis(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            0
        );
    }
}
