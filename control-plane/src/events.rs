//! The revocation feed: one task per control-plane process follows the store's revocation
//! stream and fans every event out to all `Watch` streams of the nodes connected here.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::domain::Revocation;
use crate::store::Store;

/// How long one blocking read of the stream waits before it is issued again.
const WAIT: Duration = Duration::from_secs(1);
/// Pause after a store error before following again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Events buffered per subscriber; a slower subscriber re-reads from the store.
const BUFFER: usize = 4096;

/// What a `Watch` stream hears from the feed.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    Revoked(Revocation),
    /// The feed itself fell behind the stream and lost events: every node must drop its cache.
    Flush,
    /// The virtual proxies were reloaded: every node gets a new snapshot.
    Configuration,
}

#[derive(Debug)]
pub struct RevocationFeed {
    sender: broadcast::Sender<FeedEvent>,
    /// Cursor of the newest event the feed has seen; `None` until it first reached the store.
    head: RwLock<Option<String>>,
    /// The cursor the feed started following from (`"0-0"`: the stream's beginning).
    started_from: OnceLock<String>,
    /// When a read of the stream last succeeded: until then, every revocation was heard.
    last_read: Mutex<Option<Instant>>,
}

impl RevocationFeed {
    /// Starts following the store; the task ends when the feed is dropped.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BUFFER);
        let feed = Arc::new(Self {
            sender,
            head: RwLock::new(None),
            started_from: OnceLock::new(),
            last_read: Mutex::new(None),
        });
        tokio::spawn(follow(Arc::downgrade(&feed), store));
        feed
    }

    /// Tells every watching node of this process that the configuration changed.
    pub fn announce_configuration(&self) {
        let _ = self.sender.send(FeedEvent::Configuration);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }

    /// The newest cursor known, if the feed has reached the store yet.
    pub fn head(&self) -> Option<String> {
        self.head
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where the feed started following, once it has reached the store.
    pub fn started_from(&self) -> Option<&str> {
        self.started_from.get().map(String::as_str)
    }

    /// When the feed last read the stream successfully (it reads at least once a second).
    pub fn last_read(&self) -> Option<Instant> {
        *self
            .last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_succeeded(&self) {
        *self
            .last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn set_head(&self, cursor: String) {
        *self
            .head
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cursor);
    }
}

async fn follow(feed: std::sync::Weak<RevocationFeed>, store: Arc<dyn Store>) {
    let mut cursor: Option<String> = loop {
        match store.revocation_head().await {
            Ok(head) => {
                if let Some(feed) = feed.upgrade() {
                    let _ = feed
                        .started_from
                        .set(head.clone().unwrap_or_else(|| "0-0".to_owned()));
                    feed.read_succeeded();
                }
                break head;
            }
            Err(error) => {
                tracing::warn!(%error, "revocation feed waiting for the store");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
        if feed.strong_count() == 0 {
            return;
        }
    };
    loop {
        let Some(feed) = feed.upgrade() else { return };
        feed.set_head(cursor.clone().unwrap_or_else(|| "0-0".to_owned()));
        match store.wait_for_revocations(cursor.as_deref(), WAIT).await {
            Ok(revocations) => {
                feed.read_succeeded();
                if revocations.trimmed {
                    tracing::error!(
                        "revocation feed fell behind the stream; telling nodes to flush"
                    );
                    let _ = feed.sender.send(FeedEvent::Flush);
                    match store.revocation_head().await {
                        Ok(head) => cursor = head,
                        Err(_) => tokio::time::sleep(RETRY_AFTER).await,
                    }
                    continue;
                }
                for event in revocations.events {
                    cursor = Some(event.cursor.clone());
                    // No subscribers is fine: no node is connected here.
                    let _ = feed.sender.send(FeedEvent::Revoked(event));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "revocation feed cannot read the stream");
                drop(feed);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Orders stream cursors (`<millis>-<sequence>`); `None` for anything else.
pub fn cursor_position(cursor: &str) -> Option<(u64, u64)> {
    let (millis, sequence) = cursor.split_once('-')?;
    Some((millis.parse().ok()?, sequence.parse().ok()?))
}
