//! Waiting for a condition with a deadline, instead of sleeping and hoping: the kit's
//! [`wait_for`](gatehouse_testkit::wait_for), failing the test when the deadline passes.

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics with `what` once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = gatehouse_testkit::wait_for(what, deadline, Duration::from_millis(20), || {
        let check = check();
        async move { Ok(check.await) }
    });
    poll.await.unwrap_or_else(|error| panic!("{error}"))
}
