//! The in-memory store's own tests: expiry on an injected clock and sweeping.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::MemoryStore;
use crate::clock::{Clock, ManualClock};
use crate::domain::{CapPolicy, CreateOutcome, NewSession, SessionCap, Target, Ticket, User};
use crate::store::{OneTimeRecords, Sessions, Store};
use crate::tokens::{self, TokenHash};

const MINUTE: Duration = Duration::from_secs(60);

fn store() -> (Arc<ManualClock>, MemoryStore) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    (clock.clone(), MemoryStore::new(clock, 10))
}

fn new_session(clock: &ManualClock, idle: Duration, lifetime: Duration) -> NewSession {
    NewSession {
        token_hash: TokenHash::of(&tokens::new_session_token()),
        virtual_proxy: String::new(),
        user: User::new("d", "u", vec![]).unwrap(),
        created: clock.now(),
        inactivity_timeout: idle,
        absolute_expiry: clock.now() + lifetime,
        client: crate::domain::ClientInfo::default(),
    }
}

const CAP: SessionCap = SessionCap {
    max_per_user: 5,
    policy: CapPolicy::Refuse,
};

#[tokio::test]
async fn tickets_and_targets_expire_on_the_injected_clock() {
    let (clock, store) = store();
    let hash = TokenHash::of("ticket");
    let ticket = Ticket {
        virtual_proxy: String::new(),
        user: User::new("d", "u", vec![]).unwrap(),
    };
    store.put_ticket(&hash, &ticket, MINUTE).await.unwrap();
    let target = Target {
        virtual_proxy: String::new(),
        uri: "https://h/".into(),
    };
    store.put_target("t", &target, MINUTE).await.unwrap();
    clock.advance(MINUTE - Duration::from_millis(1));
    assert!(store.get_target("t").await.unwrap().is_some());
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.take_ticket(&hash, "").await.unwrap(), None);
    assert_eq!(store.get_target("t").await.unwrap(), None);
}

#[tokio::test]
async fn sessions_slide_with_activity_up_to_their_absolute_expiry() {
    let (clock, store) = store();
    let new = new_session(&clock, 10 * MINUTE, 25 * MINUTE);
    let hash = new.token_hash.clone();
    let CreateOutcome::Created { session, .. } = store.create_session(new, CAP).await.unwrap()
    else {
        panic!("not created");
    };
    clock.advance(9 * MINUTE);
    store
        .touch_session(&session.handle, clock.now())
        .await
        .unwrap()
        .unwrap();
    clock.advance(9 * MINUTE);
    assert!(
        store.session_by_token(&hash).await.unwrap().is_some(),
        "18 min in, active"
    );
    store
        .touch_session(&session.handle, clock.now())
        .await
        .unwrap()
        .unwrap();
    clock.advance(7 * MINUTE);
    assert_eq!(
        store.session_by_token(&hash).await.unwrap(),
        None,
        "25 min: absolute expiry"
    );
    assert_eq!(
        store
            .touch_session(&session.handle, clock.now())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn expired_sessions_free_their_cap_slot_and_are_swept() {
    let (clock, store) = store();
    let cap = SessionCap {
        max_per_user: 1,
        policy: CapPolicy::Refuse,
    };
    let first = new_session(&clock, MINUTE, MINUTE);
    assert!(matches!(
        store.create_session(first, cap).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    let refused = new_session(&clock, MINUTE, MINUTE);
    assert!(matches!(
        store.create_session(refused, cap).await.unwrap(),
        CreateOutcome::CapReached
    ));
    clock.advance(MINUTE);
    let second = new_session(&clock, MINUTE, MINUTE);
    assert!(matches!(
        store.create_session(second, cap).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    clock.advance(2 * MINUTE);
    store.ping().await.unwrap();
    let (state, _) = store.state();
    assert!(state.sessions.is_empty(), "expired sessions are swept");
    assert!(
        state.handles_by_user.is_empty(),
        "and their user index with them"
    );
    assert!(state.handles_by_token.is_empty());
}
