//! Waiting for a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `check` every `every` until it answers `Ok(Some(_))`, for at most `deadline`. The
/// error names `what` and the last error `check` gave, if any.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() > deadline {
            let detail = last_error
                .map(|error| format!(": {error:#}"))
                .unwrap_or_default();
            bail!("timed out after {deadline:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(every).await;
    }
}
