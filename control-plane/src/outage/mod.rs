//! Sessions through a store outage, on every node.
//!
//! Every login and every periodic re-check of a session gives its browser a *seal*: the
//! session's claims encrypted under a key the replicas share through the store (`seal`). A
//! node passes the seal along when it asks a replica about a session it has not cached. While
//! the store answers, the seal is ignored (and renewed when it is old). When the store cannot
//! be reached, the replica opens the seal and serves the session from it, for `outage.grace`
//! after the outage began, if the session was alive when the outage began and is not among
//! the sessions ended since the seal was made (`revoked`, rebuilt from the retained
//! revocation stream at start and kept current from the live feed). The cache-hit path on
//! nodes is untouched: seals travel only with the calls nodes make anyway.
//!
//! See SECURITY.md ("Sessions during a store outage") for the threat model.

mod keys;
mod revoked;
pub mod seal;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use self::revoked::RecentRevocations;
use self::seal::KeyRing;
use crate::clock::Clock;
use crate::config::OutageConfig;
use crate::domain::{Revocation, RevocationReason, Session};
use crate::events::{FeedEvent, RevocationFeed, cursor_position};
use crate::store::{REVOCATION_BATCH, Store};

/// How far ahead of this replica's clock a seal's time may be (another replica's clock).
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How far apart the clocks of Redis (which times revocations) and the replicas (which time
/// seals) may be: a seal must be this much newer than what is known of revocations.
const REVOCATION_CLOCK_MARGIN: Duration = Duration::from_secs(5);
/// An outage ends once the store has answered this long without a failure: a store that
/// flaps does not restart `outage.grace` with every failure.
const RECOVERY_CONFIRM: Duration = Duration::from_secs(30);
/// While the store is failing, how often a check still tries it (the others answer from
/// seals at once, rather than each waiting for the store's timeout).
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The revocation feed reads at least once a second: one whose last read is older than this
/// before the outage began may have missed revocations.
const FEED_SLACK: Duration = Duration::from_secs(3);
/// Pause between attempts to read the retained revocation stream at start.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// What a seal is worth while the store cannot be reached.
// Made once per check and moved straight into the answer: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the session, until `until` at the latest.
    Admitted { session: Session, until: SystemTime },
    /// The session is known to have ended: the node may say so.
    Ended(&'static str),
    /// Nothing can be said without the store: still a 503.
    Unknown(&'static str),
}

/// Sealing keys, the recently ended sessions and the outage clock of one replica.
#[derive(Debug)]
pub struct OutageFallback {
    config: OutageConfig,
    clock: Arc<dyn Clock>,
    keys: ArcSwap<KeyRing>,
    revoked: Mutex<RecentRevocations>,
    store: Mutex<StoreHealth>,
    /// The feed the revoked set follows (none in unit tests, which drive the set by hand).
    feed: Option<Arc<RevocationFeed>>,
}

/// What the replica knows of its store's health.
#[derive(Debug, Default)]
struct StoreHealth {
    /// The last store operation failed.
    failing: bool,
    /// When the last check tried the store while it was failing.
    last_probe: Option<Instant>,
    /// When the outage began, by both clocks (the monotonic one times the grace, the wall
    /// clock is compared with seals); kept until the store has answered for
    /// `RECOVERY_CONFIRM`.
    began: Option<(Instant, SystemTime)>,
    /// Since when the store has answered without a failure.
    answering_since: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OutageFallback {
    /// Starts keeping the keys and the revoked set current. `retention` is the longest
    /// inactivity timeout of any virtual proxy: an ended session older than that needs no
    /// remembering.
    pub fn start(
        config: OutageConfig,
        store: Arc<dyn Store>,
        feed: &Arc<RevocationFeed>,
        clock: Arc<dyn Clock>,
        retention: impl Fn() -> Duration + Send + Sync + 'static,
    ) -> Arc<Self> {
        let fallback = Arc::new(Self {
            config,
            clock,
            keys: ArcSwap::from_pointee(KeyRing::default()),
            revoked: Mutex::new(RecentRevocations::default()),
            store: Mutex::new(StoreHealth::default()),
            feed: Some(feed.clone()),
        });
        // Subscribe before reading the retained stream, so nothing falls between the two.
        let live = feed.subscribe();
        tokio::spawn(follow_revocations(
            Arc::downgrade(&fallback),
            store.clone(),
            feed.clone(),
            live,
            retention,
        ));
        tokio::spawn(keys::maintain(Arc::downgrade(&fallback), store));
        fallback
    }

    /// A seal for a session just created or found valid in the store, or `None` when no key
    /// is loaded yet.
    pub fn seal(&self, token: &str, session: &Session) -> Option<String> {
        self.keys.load().seal(token, session, self.clock.now())
    }

    /// A new seal when the one `presented` is missing, not this session's, not this
    /// replica's, or older than `outage.seal_refresh`; `None` when it can stay.
    pub fn renewal(&self, token: &str, session: &Session, presented: &str) -> Option<String> {
        let now = self.clock.now();
        let keys = self.keys.load();
        let fresh = !presented.is_empty()
            && keys
                .open(token, &session.virtual_proxy, presented)
                .is_some_and(|sealed| {
                    // A caller-chosen token used again carries an earlier session's seal.
                    sealed.session.handle == session.handle
                        && sealed.valid_at + self.config.seal_refresh > now
                });
        if fresh {
            return None;
        }
        keys.seal(token, session, now)
    }

    /// The store answered.
    pub fn store_reachable(&self) {
        let now = self.clock.instant();
        let mut store = lock(&self.store);
        store.failing = false;
        let answering_since = *store.answering_since.get_or_insert(now);
        if now.duration_since(answering_since) >= RECOVERY_CONFIRM {
            store.began = None;
        }
    }

    /// The store did not answer; the outage began now unless it had begun already.
    pub fn store_unreachable(&self) {
        let mut store = lock(&self.store);
        store.failing = true;
        store.answering_since = None;
        store
            .began
            .get_or_insert_with(|| (self.clock.instant(), self.clock.now()));
    }

    /// Whether a check should ask the store: always while it answers; while it fails, one
    /// check every `PROBE_INTERVAL` (the rest answer from seals without waiting for it).
    pub fn should_ask_store(&self) -> bool {
        let now = self.clock.instant();
        let mut store = lock(&self.store);
        if !store.failing {
            return true;
        }
        let due = store
            .last_probe
            .is_none_or(|probed| now.duration_since(probed) >= PROBE_INTERVAL);
        if due {
            store.last_probe = Some(now);
        }
        due
    }

    /// When the outage began, by both clocks, and how much of the grace is left, if it is
    /// within the grace. Read once: two readings of the clock could disagree on it.
    fn outage_within_grace(&self) -> Result<(Instant, SystemTime, Duration), &'static str> {
        let now = self.clock.instant();
        let (began, began_at) = lock(&self.store).began.unwrap_or((now, self.clock.now()));
        match self.config.grace.checked_sub(now.duration_since(began)) {
            Some(left) if !left.is_zero() => Ok((began, began_at, left)),
            _ => Err("the outage has lasted longer than outage.grace"),
        }
    }

    /// Whether the revocation feed was reading right up to the outage: if it had stopped
    /// before, revocations written meanwhile may be missing from the set.
    fn followed_until(&self, began: Instant) -> bool {
        self.feed.as_ref().is_none_or(|feed| {
            feed.last_read()
                .is_some_and(|read| read + FEED_SLACK >= began)
        })
    }

    /// What the seal `presented` with `token` at `virtual_proxy` is worth now, the store
    /// being unreachable.
    pub fn admit(&self, token: &str, virtual_proxy: &str, presented: &str) -> Verdict {
        let now = self.clock.now();
        let (began_instant, began, left) = match self.outage_within_grace() {
            Ok(began) => began,
            Err(reason) => return Verdict::Unknown(reason),
        };
        let served_until = now + left;
        if !self.followed_until(began_instant) {
            return Verdict::Unknown("revocations were not followed up to the outage");
        }
        let Some(sealed) = self.keys.load().open(token, virtual_proxy, presented) else {
            return Verdict::Unknown("the seal is not one this replica can open");
        };
        if sealed.session.absolute_expiry <= now {
            return Verdict::Ended("the session's lifetime is over");
        }
        if sealed.valid_at > now + CLOCK_SKEW {
            return Verdict::Unknown("the seal is from the future");
        }
        if sealed.valid_at + sealed.session.inactivity_timeout <= began {
            return Verdict::Unknown("the session may have timed out before the outage");
        }
        let revoked = lock(&self.revoked);
        match revoked.known_since() {
            Some(since)
                if since + REVOCATION_CLOCK_MARGIN < sealed.valid_at
                    || since == SystemTime::UNIX_EPOCH => {}
            _ => return Verdict::Unknown("not every revocation since the seal is known"),
        }
        if revoked.contains(&sealed.session.handle) {
            return Verdict::Ended("the session was ended");
        }
        Verdict::Admitted {
            until: served_until.min(sealed.session.absolute_expiry),
            session: sealed.session,
        }
    }

    /// Whether this replica could vouch for a sealed session now: it holds keys, it knows
    /// the recent revocations, and an outage under way has not outlasted `outage.grace`.
    pub fn can_vouch(&self) -> bool {
        let followed = match self.outage_within_grace() {
            // With no outage under way there is nothing to have followed up to.
            Ok((began, _, _)) => lock(&self.store).began.is_none() || self.followed_until(began),
            Err(_) => false,
        };
        followed && !self.keys.load().is_empty() && lock(&self.revoked).known_since().is_some()
    }

    /// A fallback with no background tasks, for tests that drive it by hand.
    #[cfg(test)]
    fn for_tests(config: OutageConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            keys: ArcSwap::from_pointee(KeyRing::default()),
            revoked: Mutex::new(RecentRevocations::default()),
            store: Mutex::new(StoreHealth::default()),
            feed: None,
        }
    }

    fn replace_keys(&self, ring: KeyRing) {
        self.keys.store(Arc::new(ring));
    }

    /// Recently ended sessions remembered now (for metrics and tests).
    pub fn remembered_revocations(&self) -> usize {
        lock(&self.revoked).len()
    }
}

/// When a revocation happened: Redis stream ids carry their time; without one (the memory
/// store), the time it was heard of.
fn revocation_time(event: &Revocation, now: SystemTime) -> SystemTime {
    match cursor_position(&event.cursor) {
        Some((millis, _)) if millis > 0 => SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
        _ => now,
    }
}

/// Loads what the stream retains, then follows the live feed.
async fn follow_revocations(
    fallback: std::sync::Weak<OutageFallback>,
    store: Arc<dyn Store>,
    feed: Arc<RevocationFeed>,
    mut live: broadcast::Receiver<FeedEvent>,
    retention: impl Fn() -> Duration + Send + Sync + 'static,
) {
    loop {
        let Some(this) = fallback.upgrade() else {
            return;
        };
        match load_retained(&this, &store, &feed, &retention).await {
            Ok(count) => {
                tracing::info!(count, "recent revocations loaded for outage fallback");
                break;
            }
            Err(error) => tracing::warn!(%error, "cannot load recent revocations yet"),
        }
        drop(this);
        tokio::time::sleep(LOAD_RETRY).await;
    }
    loop {
        let received = live.recv().await;
        let Some(this) = fallback.upgrade() else {
            return;
        };
        let now = this.clock.now();
        match received {
            // A session made, not ended: nothing to refuse.
            Ok(FeedEvent::Revoked(event)) if event.reason == RevocationReason::Created => {}
            Ok(FeedEvent::Revoked(event)) => {
                let at = revocation_time(&event, now);
                lock(&this.revoked).record(
                    event.handle,
                    at,
                    retention(),
                    this.config.max_revocations,
                );
            }
            Ok(FeedEvent::Configuration) => {}
            // Events were lost: only sealed sessions validated from now on can be vouched for.
            Ok(FeedEvent::Flush) | Err(broadcast::error::RecvError::Lagged(_)) => {
                tracing::warn!("revocations were missed; older seals are refused in an outage");
                lock(&this.revoked).lost_events(now);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads every retained revocation into the set, up to where the live feed started (so that
/// nothing falls between the two); the set is complete from the oldest one when the stream
/// was ever trimmed, from the beginning otherwise.
async fn load_retained(
    fallback: &OutageFallback,
    store: &Arc<dyn Store>,
    feed: &RevocationFeed,
    retention: &(impl Fn() -> Duration + Send + Sync),
) -> Result<usize, crate::store::StoreError> {
    let mut cursor = "0-0".to_owned();
    let mut since = SystemTime::UNIX_EPOCH;
    let mut count = 0;
    loop {
        let batch = store
            .revocations_after(Some(&cursor), REVOCATION_BATCH)
            .await?;
        let now = fallback.clock.now();
        if batch.trimmed {
            // Entries before this batch may be gone: the set is complete from here on.
            let from = batch
                .events
                .first()
                .map_or(now, |first| revocation_time(first, now));
            since = since.max(from);
        }
        let Some(last) = batch.events.last() else {
            // Read to the end: done once the feed follows from no later than here.
            let caught_up = feed.started_from().is_some_and(|start| {
                start == "0-0"
                    || cursor_position(start).unwrap_or((0, 0))
                        <= cursor_position(&cursor).unwrap_or((0, 0))
            });
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        cursor.clone_from(&last.cursor);
        let mut revoked = lock(&fallback.revoked);
        for event in batch.events {
            if event.reason == RevocationReason::Created {
                continue;
            }
            let at = revocation_time(&event, now);
            revoked.record(
                event.handle,
                at,
                retention(),
                fallback.config.max_revocations,
            );
            count += 1;
        }
    }
    lock(&fallback.revoked).loaded(since);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{SealKey, User};

    const TOKEN: &str = "the-session-token";

    struct Setup {
        clock: Arc<ManualClock>,
        fallback: OutageFallback,
    }

    fn setup() -> Setup {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let config = OutageConfig {
            grace: Duration::from_secs(600),
            seal_refresh: Duration::from_secs(120),
            ..OutageConfig::default()
        };
        let fallback = OutageFallback::for_tests(config, clock.clone());
        fallback.replace_keys(KeyRing::new(&[SealKey {
            id: "00000000000000aa".into(),
            secret: [3; 32],
            created: clock.now(),
            active_from: clock.now(),
        }]));
        lock(&fallback.revoked).loaded(SystemTime::UNIX_EPOCH);
        Setup { clock, fallback }
    }

    fn session(now: SystemTime) -> Session {
        Session {
            handle: "h1".into(),
            virtual_proxy: "app".into(),
            user: User {
                directory: "CORP".into(),
                id: "alice".into(),
                attributes: Vec::new(),
            },
            created: now,
            last_active: now,
            inactivity_timeout: Duration::from_secs(1800),
            absolute_expiry: now + Duration::from_secs(3600),
            client: crate::domain::ClientInfo::default(),
        }
    }

    fn admitted(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Admitted { .. })
    }

    #[test]
    fn a_seal_is_served_within_the_grace_and_not_after() {
        let Setup { clock, fallback } = setup();
        let seal = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        clock.advance(Duration::from_secs(60));
        fallback.store_unreachable();
        let began = clock.now();
        let verdict = fallback.admit(TOKEN, "app", &seal);
        assert_eq!(
            verdict,
            Verdict::Admitted {
                session: fallback
                    .keys
                    .load()
                    .open(TOKEN, "app", &seal)
                    .unwrap()
                    .session,
                until: began + Duration::from_secs(600),
            }
        );
        assert!(fallback.can_vouch());
        clock.advance(Duration::from_secs(600));
        assert!(matches!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Unknown(_)
        ));
        assert!(!fallback.can_vouch());
        // The store back for a moment, then down again: the same outage, no new grace.
        fallback.store_reachable();
        clock.advance(RECOVERY_CONFIRM / 2);
        fallback.store_reachable();
        fallback.store_unreachable();
        assert!(matches!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Unknown(_)
        ));
        // Back for longer than RECOVERY_CONFIRM: the next failure is a new outage.
        fallback.store_reachable();
        clock.advance(RECOVERY_CONFIRM);
        fallback.store_reachable();
        fallback.store_unreachable();
        assert!(admitted(&fallback.admit(TOKEN, "app", &seal)));
    }

    #[test]
    fn what_the_seal_cannot_vouch_for_is_refused() {
        let Setup { clock, fallback } = setup();
        let seal = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        fallback.store_unreachable();
        assert!(matches!(
            fallback.admit("another-token", "app", &seal),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            fallback.admit(TOKEN, "other", &seal),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            fallback.admit(TOKEN, "app", "garbage"),
            Verdict::Unknown(_)
        ));
        assert!(admitted(&fallback.admit(TOKEN, "app", &seal)));
        lock(&fallback.revoked).record("h1".into(), clock.now(), Duration::from_secs(1800), 100);
        assert_eq!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Ended("the session was ended")
        );
    }

    #[test]
    fn a_session_that_timed_out_or_ended_before_the_outage_is_refused() {
        let Setup { clock, fallback } = setup();
        let seal = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        // Idle for longer than its inactivity timeout when the outage begins.
        clock.advance(Duration::from_secs(1801));
        fallback.store_unreachable();
        assert!(matches!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Unknown(_)
        ));
        // Past its absolute lifetime, in a later outage.
        fallback.store_reachable();
        clock.advance(Duration::from_secs(1800));
        fallback.store_reachable();
        fallback.store_unreachable();
        assert!(matches!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Ended(_)
        ));
    }

    #[test]
    fn seals_made_before_what_is_known_of_revocations_are_refused() {
        let Setup { clock, fallback } = setup();
        let seal = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        clock.advance(Duration::from_secs(10));
        lock(&fallback.revoked).lost_events(clock.now());
        fallback.store_unreachable();
        assert!(matches!(
            fallback.admit(TOKEN, "app", &seal),
            Verdict::Unknown(_)
        ));
        // A seal made moments after the loss could still predate it by another clock.
        let close = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        assert!(matches!(
            fallback.admit(TOKEN, "app", &close),
            Verdict::Unknown(_)
        ));
        clock.advance(REVOCATION_CLOCK_MARGIN + Duration::from_secs(1));
        let fresh = fallback.seal(TOKEN, &session(clock.now())).unwrap();
        assert!(admitted(&fallback.admit(TOKEN, "app", &fresh)));
        // Not loaded at all (a replica that never read the stream): nothing is vouched for.
        let blank = OutageFallback::for_tests(fallback.config, clock.clone());
        blank.replace_keys(KeyRing::new(&[SealKey {
            id: "00000000000000aa".into(),
            secret: [3; 32],
            created: clock.now(),
            active_from: clock.now(),
        }]));
        blank.store_unreachable();
        assert!(matches!(
            blank.admit(TOKEN, "app", &fresh),
            Verdict::Unknown(_)
        ));
        assert!(!blank.can_vouch());
    }

    #[test]
    fn a_seal_is_renewed_once_it_is_older_than_the_refresh() {
        let Setup { clock, fallback } = setup();
        let session = session(clock.now());
        assert!(fallback.renewal(TOKEN, &session, "").is_some());
        assert!(fallback.renewal(TOKEN, &session, "garbage").is_some());
        let seal = fallback.seal(TOKEN, &session).unwrap();
        clock.advance(Duration::from_secs(60));
        assert_eq!(fallback.renewal(TOKEN, &session, &seal), None);
        clock.advance(Duration::from_secs(61));
        let renewed = fallback.renewal(TOKEN, &session, &seal).unwrap();
        let opened = fallback.keys.load().open(TOKEN, "app", &renewed).unwrap();
        assert_eq!(opened.valid_at, clock.now());
    }
}
