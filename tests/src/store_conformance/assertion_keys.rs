//! Assertion-signing keys: every replica reads the same set; adding a key twice keeps the
//! first; removing one leaves the others.

use super::*;
use gatehouse_control_plane::domain::AssertionKey;

conformance!(assertion_keys_are_added_once_read_back_whole_and_removed,);

fn assertion_key(id: &str, byte: u8, created_secs: u64) -> AssertionKey {
    let created = SystemTime::UNIX_EPOCH + Duration::from_millis(created_secs * 1000 + 123);
    AssertionKey {
        id: id.to_owned(),
        pkcs8: vec![byte; 138],
        created,
        active_from: created + Duration::from_secs(3600),
    }
}

async fn assertion_keys_are_added_once_read_back_whole_and_removed(subject: Subject) {
    let store = subject.store;
    assert!(store.assertion_keys().await.unwrap().is_empty());
    let first = assertion_key("a1-5265c00", 1, 1_800_000_000);
    let second = assertion_key("b2-5265c00", 2, 1_800_086_400);
    store.add_assertion_key(&first).await.unwrap();
    store.add_assertion_key(&second).await.unwrap();
    // Another replica adding a key of the same id changes nothing.
    store
        .add_assertion_key(&assertion_key("a1-5265c00", 9, 1_900_000_000))
        .await
        .unwrap();
    let mut keys = store.assertion_keys().await.unwrap();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(keys, vec![first.clone(), second.clone()]);
    store.remove_assertion_key(&first.id).await.unwrap();
    store.remove_assertion_key("never-made").await.unwrap();
    assert_eq!(store.assertion_keys().await.unwrap(), vec![second]);
    // Sealing keys are another set.
    assert!(store.seal_keys().await.unwrap().is_empty());
}
