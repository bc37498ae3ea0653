//! Seal keys: every replica reads the same set; adding a key twice keeps the first; removing
//! one leaves the others.

use super::*;
use gatehouse_control_plane::domain::SealKey;

conformance!(seal_keys_are_added_once_read_back_whole_and_removed,);

fn seal_key(id: &str, secret: u8, created_secs: u64) -> SealKey {
    let created = SystemTime::UNIX_EPOCH + Duration::from_millis(created_secs * 1000 + 123);
    SealKey {
        id: id.to_owned(),
        secret: [secret; 32],
        created,
        active_from: created + Duration::from_secs(60),
    }
}

async fn seal_keys_are_added_once_read_back_whole_and_removed(subject: Subject) {
    let store = subject.store;
    assert!(store.seal_keys().await.unwrap().is_empty());
    let first = seal_key("00000000000000a1", 1, 1_800_000_000);
    let second = seal_key("00000000000000b2", 2, 1_800_086_400);
    store.add_seal_key(&first).await.unwrap();
    store.add_seal_key(&second).await.unwrap();
    // Another replica adding a key of the same id changes nothing.
    store
        .add_seal_key(&seal_key("00000000000000a1", 9, 1_900_000_000))
        .await
        .unwrap();
    let mut keys = store.seal_keys().await.unwrap();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(keys, vec![first.clone(), second.clone()]);
    store.remove_seal_key(&first.id).await.unwrap();
    store.remove_seal_key("0000000000000000").await.unwrap();
    assert_eq!(store.seal_keys().await.unwrap(), vec![second]);
}
