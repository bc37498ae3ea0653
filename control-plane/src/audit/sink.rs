//! Audit sinks besides the log: a Redis stream and an OTLP log exporter. Each has a bounded
//! queue and a task of its own that writes records in batches, so the call that decided an
//! event (a login, a logout) only ever pays for a `try_send`. A sink that is down or slow
//! makes its queue fill; what does not fit is dropped and counted, never waited for.
//!
//! A write that failed in a way that may pass (the receiver unreachable, overloaded or too
//! slow) is tried again with the same batch after a growing pause; one the receiver refused
//! for good (a Redis key of the wrong type, an OTLP `INVALID_ARGUMENT`) drops its batch.
//! Failures are counted in `gatehouse_control_plane_audit_sink_errors_total` and
//! `..._dropped_total`, and logged at most once a minute per sink.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::AuditRecord;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::store::RedisAuditStream;

/// Most records one write carries.
const MAX_BATCH: usize = 100;
/// Pause after the first failed write; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// At most one warning per sink in this interval: an outage of the receiver would otherwise
/// write a line per retry.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(60);
/// How often a flush looks whether the queue is empty.
const FLUSH_POLL: Duration = Duration::from_millis(20);

/// Why a write failed.
#[derive(Debug)]
pub(super) enum SinkError {
    /// It may work later: the same batch is written again.
    Retry(String),
    /// The receiver refused the batch for good: it is dropped.
    Refused(String),
}

/// A receiver of audit records.
pub(super) trait Sink: Send + Sync + 'static {
    /// Its name in metrics and logs.
    const NAME: &'static str;

    /// Writes `records`, in order; on success, how many of them the receiver still rejected
    /// (an OTLP partial success).
    fn write(&self, records: &[AuditRecord])
    -> impl Future<Output = Result<u64, SinkError>> + Send;
}

/// The sending end of one sink's queue.
#[derive(Debug)]
pub(super) struct SinkQueue {
    name: &'static str,
    sender: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
    /// Records dropped because the queue was full since the task last said so.
    overflowed: Arc<AtomicU64>,
    /// Records queued and not yet written or dropped, the one being written included.
    pending: Arc<AtomicUsize>,
}

impl SinkQueue {
    /// Starts the task that writes to `sink` what [`offer`](Self::offer) queues, at most
    /// `capacity` records waiting.
    pub fn start<S: Sink>(sink: S, capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let overflowed = Arc::new(AtomicU64::new(0));
        // Exposed at 0 from the start: an alert on "nothing written" needs a series to look
        // at, and `increase()` misses the first loss of a series that appears with it.
        metrics.audit_sink_written(S::NAME, 0);
        metrics.audit_sink_errors(S::NAME, 0);
        for reason in ["queue_full", "refused"] {
            metrics.audit_sink_dropped(S::NAME, reason, 0);
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let counts = Counts {
            metrics: metrics.clone(),
            overflowed: overflowed.clone(),
            pending: pending.clone(),
        };
        tokio::spawn(drain(sink, receiver, counts));
        Self {
            name: S::NAME,
            sender,
            metrics,
            overflowed,
            pending,
        }
    }

    /// Queues a copy of `record`, or drops it (counted) when the queue is full.
    pub fn offer(&self, record: &AuditRecord) {
        // Counted before it is sent, so the task never finishes a record not yet counted.
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.sender.try_send(record.clone()).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.audit_sink_dropped(self.name, "queue_full", 1);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every record queued so far is written or dropped, or `deadline` passes;
    /// how many were still pending then.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let pending = self.pending.load(Ordering::Acquire);
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What the task counts as it goes.
struct Counts {
    metrics: Arc<Metrics>,
    overflowed: Arc<AtomicU64>,
    pending: Arc<AtomicUsize>,
}

/// Writes batches from `queue` to `sink` until every sender is gone.
async fn drain<S: Sink>(sink: S, mut queue: mpsc::Receiver<AuditRecord>, counts: Counts) {
    let Counts {
        metrics,
        overflowed,
        pending,
    } = counts;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut complaints = Complaints::new(S::NAME);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            match sink.write(&batch).await {
                Ok(rejected) => {
                    metrics.audit_sink_written(S::NAME, count.saturating_sub(rejected));
                    if rejected > 0 {
                        metrics.audit_sink_dropped(S::NAME, "refused", rejected);
                        complaints.say(&format!("the receiver rejected {rejected} records"));
                    }
                    break;
                }
                Err(SinkError::Retry(error)) => {
                    metrics.audit_sink_errors(S::NAME, 1);
                    complaints.say(&format!("{error} (retrying)"));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(SinkError::Refused(error)) => {
                    metrics.audit_sink_errors(S::NAME, 1);
                    metrics.audit_sink_dropped(S::NAME, "refused", count);
                    complaints.say(&format!("{error} ({count} records dropped)"));
                    break;
                }
            }
        }
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
        let lost = overflowed.swap(0, Ordering::Relaxed);
        if lost > 0 {
            complaints.say(&format!("queue full: {lost} records dropped"));
        }
    }
}

/// Warnings of one sink, at most one per [`COMPLAINT_INTERVAL`]; the next one says how many
/// were held back.
struct Complaints {
    sink: &'static str,
    last: Option<Instant>,
    held_back: u64,
}

impl Complaints {
    fn new(sink: &'static str) -> Self {
        Self {
            sink,
            last: None,
            held_back: 0,
        }
    }

    fn say(&mut self, problem: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < COMPLAINT_INTERVAL)
        {
            self.held_back += 1;
            return;
        }
        tracing::warn!(
            sink = self.sink,
            problem,
            similar_warnings_held_back = self.held_back,
            "audit sink failing; see gatehouse_control_plane_audit_sink_dropped_total"
        );
        self.last = Some(now);
        self.held_back = 0;
    }
}

/// Appends each record to the configured Redis stream.
pub(super) struct RedisStreamSink(pub RedisAuditStream);

impl Sink for RedisStreamSink {
    const NAME: &'static str = "redis_stream";

    async fn write(&self, records: &[AuditRecord]) -> Result<u64, SinkError> {
        let entries: Vec<_> = records.iter().map(AuditRecord::fields).collect();
        match self.0.append(&entries).await {
            Ok(()) => Ok(0),
            Err(StoreError::Unavailable(error)) => Err(SinkError::Retry(error)),
            Err(error) => Err(SinkError::Refused(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::audit::AuditEvent;

    /// Fails the first `failures` writes as `Retry`, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Flaky {
        failures: Arc<Mutex<u32>>,
        written: Arc<Mutex<Vec<AuditRecord>>>,
    }

    impl Sink for Flaky {
        const NAME: &'static str = "flaky";

        async fn write(&self, records: &[AuditRecord]) -> Result<u64, SinkError> {
            {
                let mut failures = self.failures.lock().unwrap();
                if *failures > 0 {
                    *failures -= 1;
                    return Err(SinkError::Retry("down".to_owned()));
                }
            }
            self.written.lock().unwrap().extend_from_slice(records);
            Ok(0)
        }
    }

    fn record(virtual_proxy: &str) -> AuditRecord {
        let client = crate::domain::ClientInfo::new("192.0.2.1", "agent");
        AuditEvent::LoginFailed {
            method: crate::audit::Method::Ticket,
            virtual_proxy,
            user: None,
            client: &client,
            reason: "no".to_owned(),
        }
        .record(SystemTime::UNIX_EPOCH)
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_in_order_and_a_full_queue_drops_what_does_not_fit() {
        let metrics = Arc::new(Metrics::new());
        let sink = Flaky::default();
        *sink.failures.lock().unwrap() = 3;
        let queue = SinkQueue::start(sink.clone(), 2, metrics.clone());
        // The task has not run yet: two fit, the third is dropped at once.
        for proxy in ["a", "b", "c"] {
            queue.offer(&record(proxy));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.written.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let written: Vec<String> = sink
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|record| record.virtual_proxy.clone())
            .collect();
        assert_eq!(written, ["a", "b"]);
        let text = metrics.render();
        assert!(
            text.contains(
                "gatehouse_control_plane_audit_sink_dropped_total{sink=\"flaky\",reason=\"queue_full\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_control_plane_audit_sink_errors_total{sink=\"flaky\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_control_plane_audit_sink_written_total{sink=\"flaky\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_flush_waits_for_records_being_retried_until_its_deadline() {
        let metrics = Arc::new(Metrics::new());
        let sink = Flaky::default();
        *sink.failures.lock().unwrap() = 2;
        let queue = SinkQueue::start(sink.clone(), 10, metrics.clone());
        queue.offer(&record("a"));
        // Two failures: 100 ms, then 200 ms of pause before the write that works.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        assert_eq!(queue.flush(deadline).await, 0);
        assert_eq!(
            sink.written.lock().unwrap().len(),
            1,
            "written when the flush returns"
        );

        *sink.failures.lock().unwrap() = 1000;
        queue.offer(&record("b"));
        let soon = tokio::time::Instant::now() + Duration::from_millis(150);
        assert_eq!(queue.flush(soon).await, 1, "still pending at the deadline");
    }
}
