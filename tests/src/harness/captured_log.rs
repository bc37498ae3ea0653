//! The log lines of the code running on this test's thread, kept for the test to read.
//!
//! A `#[tokio::test]` runs on a current-thread runtime: a control plane or node it starts in
//! process runs its tasks on the test's own thread, so a thread-local subscriber sees their
//! events and no other test's. Tests that must show something did NOT happen wait for the
//! line that says the decision was made (e.g. "configuration not reloaded") instead of
//! sleeping and hoping.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::subscriber::DefaultGuard;

/// What was logged on this thread since [`CapturedLog::install`], until it is dropped.
#[derive(Debug)]
pub struct CapturedLog {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

impl CapturedLog {
    /// Captures every event (all levels) logged on this thread from now on.
    pub fn install() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(writer.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            lines,
            _guard: guard,
        }
    }

    /// Whether any line logged so far contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&lines).contains(text)
    }
}

/// Appends what the subscriber writes to the shared buffer.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
