//! A steady load of browser requests for the reliability tests: a few workers per target
//! label (e.g. per node), each with its own keep-alive connections (as browsers have), cycle
//! through their label's targets (a URL with a session cookie) and count the answers by
//! status, per label.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{COOKIE, LOCATION, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

/// Longest one request of the load may take before it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Unexpected answers kept per label, to show what went wrong.
const SAMPLES: usize = 5;
/// An answer slower than this counts as slow (a user would notice the wait).
pub const SLOW: Duration = Duration::from_millis(250);

/// One kind of request: a GET of `url`, with `cookie` (a `name=value` pair) when given.
#[derive(Debug, Clone)]
pub struct Target {
    /// Groups the answers, e.g. the node a request went through.
    pub label: String,
    pub url: String,
    pub cookie: Option<String>,
}

impl Target {
    pub fn new(label: &str, url: String, cookie: Option<String>) -> Self {
        Self {
            label: label.to_owned(),
            url,
            cookie,
        }
    }
}

/// What one label's requests got.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer: connection refused or reset, or no answer in time.
    pub failures: u64,
    /// 503 answers without `Retry-After`.
    pub unavailable_without_retry_after: u64,
    /// Slowest answer.
    pub slowest: Duration,
    /// Answers (of any status) slower than [`SLOW`].
    pub slow: u64,
    /// The first few answers other than 200: status, `Location` and the start of the body
    /// (or the error).
    pub samples: Vec<String>,
}

impl Tally {
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failures
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Anything but a 200.
    pub fn errors(&self) -> u64 {
        self.requests() - self.count(200)
    }

    fn add(&mut self, other: &Tally) {
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.failures += other.failures;
        self.unavailable_without_retry_after += other.unavailable_without_retry_after;
        self.slowest = self.slowest.max(other.slowest);
        self.slow += other.slow;
        for sample in &other.samples {
            if self.samples.len() < SAMPLES {
                self.samples.push(sample.clone());
            }
        }
    }

    fn sample(&mut self, what: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(what);
        }
    }
}

/// Tallies by label.
#[derive(Debug, Clone, Default)]
pub struct Counts(pub BTreeMap<String, Tally>);

impl Counts {
    /// The tally of one label (empty when it sent nothing).
    pub fn of(&self, label: &str) -> Tally {
        self.0.get(label).cloned().unwrap_or_default()
    }

    /// Every label together.
    pub fn all(&self) -> Tally {
        let mut all = Tally::default();
        for tally in self.0.values() {
            all.add(tally);
        }
        all
    }

    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &Counts) {
        for (label, tally) in &other.0 {
            self.0.entry(label.clone()).or_default().add(tally);
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (label, tally) in &self.0 {
            writeln!(
                f,
                "{label}: {} requests, statuses {:?}, {} failures, {} slower than {SLOW:?}, \
                 slowest {:?}, samples {:?}",
                tally.requests(),
                tally.statuses,
                tally.failures,
                tally.slow,
                tally.slowest,
                tally.samples
            )?;
        }
        Ok(())
    }
}

/// A running load; stopped by [`stop`](Self::stop) or when dropped.
#[derive(Debug)]
pub struct Load {
    stopping: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` workers per label; each sends one request at a time, pausing `pause`
    /// between two, through the targets of its label only (as a browser keeps to its own
    /// connections: a node that is slow holds up its own users, not every user), and the
    /// workers of a label start at different targets so that all are covered at once.
    pub fn start(targets: Vec<Target>, workers: usize, pause: Duration) -> Self {
        assert!(!targets.is_empty(), "a load needs targets");
        let mut by_label: Vec<(String, Vec<Target>)> = Vec::new();
        for target in targets {
            match by_label
                .iter_mut()
                .find(|(label, _)| *label == target.label)
            {
                Some((_, group)) => group.push(target),
                None => by_label.push((target.label.clone(), vec![target])),
            }
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let workers = by_label
            .into_iter()
            .flat_map(|(_, group)| {
                let group = Arc::new(group);
                (0..workers)
                    .map(|worker| {
                        tokio::spawn(work(
                            worker,
                            group.clone(),
                            pause,
                            stopping.clone(),
                            counts.clone(),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Self {
            stopping,
            counts,
            workers,
        }
    }

    /// The counts since the load started or since the last `take`, and starts counting
    /// afresh: the phases of a test (before, during, after a fault) are counted apart.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Lets in-flight requests finish, and returns the counts since the last `take`.
    pub async fn stop(mut self) -> Counts {
        self.stopping.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.await;
        }
        self.take()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        for worker in &self.workers {
            worker.abort();
        }
    }
}

async fn work(
    worker: usize,
    targets: Arc<Vec<Target>>,
    pause: Duration,
    stopping: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut next = worker % targets.len();
    while !stopping.load(Ordering::Relaxed) {
        let target = &targets[next];
        next = (next + 1) % targets.len();
        let started = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send(&client, target)).await;
        let elapsed = started.elapsed();
        {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            let tally = counts.0.entry(target.label.clone()).or_default();
            tally.slowest = tally.slowest.max(elapsed);
            if elapsed > SLOW {
                tally.slow += 1;
            }
            match outcome {
                Ok(Ok((status, location, retry_after, body))) => {
                    *tally.statuses.entry(status.as_u16()).or_default() += 1;
                    if status == StatusCode::SERVICE_UNAVAILABLE && !retry_after {
                        tally.unavailable_without_retry_after += 1;
                    }
                    if status != StatusCode::OK {
                        tally.sample(format!(
                            "{status} location={location:?} body={:?}",
                            String::from_utf8_lossy(&body[..body.len().min(120)])
                        ));
                    }
                }
                Ok(Err(error)) => {
                    tally.failures += 1;
                    tally.sample(format!("no answer: {error}"));
                }
                Err(_) => {
                    tally.failures += 1;
                    tally.sample(format!("no answer within {REQUEST_TIMEOUT:?}"));
                }
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

type Answer = (StatusCode, Option<String>, bool, Bytes);

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    target: &Target,
) -> Result<Answer, String> {
    let mut request = Request::get(&target.url);
    if let Some(cookie) = &target.cookie {
        request = request.header(COOKIE, cookie);
    }
    let request = request
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("{error:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    let location = parts
        .headers
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok((
        parts.status,
        location,
        parts.headers.contains_key(RETRY_AFTER),
        body,
    ))
}
