//! One node's idle kept-alive connections, of either kind the node keeps (the inline hyper
//! connections of `connections`, the plain ones of `plain`): most recently used last, none
//! kept past `IDLE_TIMEOUT`, at most `MAX_IDLE`.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Idle connections kept per node; one coming back to a full list is closed.
const MAX_IDLE: usize = 256;
/// An idle connection is closed rather than reused after this long: upstreams close theirs
/// too (nginx after 75 s), and reusing one they are closing costs a failed request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection that can sit idle.
pub trait Reusable {
    /// Whether it can take a request now (the upstream has not closed it, nothing arrived
    /// on it unasked); asked when it is taken from the list.
    fn is_reusable(&mut self) -> bool;
    /// Told when it is taken from the list for a request.
    fn taken(&mut self) {}
}

struct Idle<T> {
    connection: T,
    since: Instant,
}

/// One node's idle connections of one kind.
pub struct IdleList<T> {
    idle: Mutex<VecDeque<Idle<T>>>,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> std::fmt::Debug for IdleList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleList")
            .field("idle", &self.len())
            .finish()
    }
}

impl<T> IdleList<T> {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle<T>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Reusable> IdleList<T> {
    /// The most recently used connection that is still good; stale ones are dropped (which
    /// closes them) on the way.
    pub fn checkout(&self) -> Option<T> {
        loop {
            let Idle {
                mut connection,
                since,
            } = self.lock().pop_back()?;
            if since.elapsed() < IDLE_TIMEOUT && connection.is_reusable() {
                connection.taken();
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for a later request.
    pub fn checkin(&self, connection: T) {
        let now = Instant::now();
        let mut idle = self.lock();
        // The least recently used end is where connections go stale while traffic is low.
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                connection,
                since: now,
            });
        }
    }
}
