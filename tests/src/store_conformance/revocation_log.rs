//! The revocation log: cursors, the head, waiting for the next event, and a trimmed stream
//! reported as such.

use super::*;

conformance!(
    revocation_cursors_resume_where_they_left_off,
    the_revocation_head_is_the_newest_event,
    waiting_for_revocations_wakes_on_a_new_event,
    the_zero_cursor_means_from_the_start,
);

#[tokio::test]
async fn memory_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(memory(10).await).await;
}

#[tokio::test]
async fn redis_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(redis(10).await).await;
}

#[tokio::test]
async fn redis_sentinel_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(sentinel(10).await).await;
}

#[tokio::test]
async fn redis_cluster_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(cluster(10).await).await;
}

async fn revocation_cursors_resume_where_they_left_off(subject: Subject) {
    let store = subject.store;
    let mut handles = Vec::new();
    for index in 0..5 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
        handles.push(session.handle);
    }
    let first_two = store.revocations_after(None, 2).await.unwrap();
    assert!(!first_two.trimmed);
    assert_eq!(first_two.events.len(), 2);
    let rest = store
        .revocations_after(Some(&first_two.events[1].cursor), 100)
        .await
        .unwrap();
    assert!(!rest.trimmed);
    let order: Vec<String> = first_two
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.handle.clone())
        .collect();
    assert_eq!(order, handles);
    let last = rest.events.last().unwrap().cursor.clone();
    assert!(
        store
            .revocations_after(Some(&last), 100)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert!(matches!(
        store.revocations_after(Some("garbage"), 1).await,
        Err(StoreError::InvalidCursor)
    ));
}

async fn the_revocation_head_is_the_newest_event(subject: Subject) {
    let store = subject.store;
    assert_eq!(store.revocation_head().await.unwrap(), None);
    for index in 0..3 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
    }
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(
        store.revocation_head().await.unwrap(),
        Some(events[2].cursor.clone())
    );
}

async fn waiting_for_revocations_wakes_on_a_new_event(subject: Subject) {
    let store = subject.store;
    let (_, before) = create(&*store, "", user("CORP", "before")).await;
    store
        .delete_session(&before.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let head = store.revocation_head().await.unwrap().unwrap();
    let (_, session) = create(&*store, "", user("CORP", "alice")).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_revocations(Some(&head), Duration::from_secs(30))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .delete_session(&session.handle, RevocationReason::Logout)
        .await
        .unwrap();
    // The wait is 30 s: finishing within 5 s means the event woke it.
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was woken by the event")
        .unwrap();
    assert_eq!(woken.events.len(), 1);
    assert_eq!(woken.events[0].handle, session.handle);
    assert_eq!(woken.events[0].reason, RevocationReason::Logout);
}

async fn the_zero_cursor_means_from_the_start(subject: Subject) {
    let store = subject.store;
    let empty = store.revocations_after(Some("0-0"), 10).await.unwrap();
    assert!(empty.events.is_empty() && !empty.trimmed);
    let (_, session) = create(&*store, "", user("CORP", "alice")).await;
    store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let all = store.revocations_after(Some("0-0"), 10).await.unwrap();
    assert_eq!(all.events.len(), 1);
    assert!(!all.trimmed, "nothing was trimmed");
}

async fn trimmed_streams_are_reported(subject: Subject) {
    let store = subject.store;
    let (_, session) = create(&*store, "", user("CORP", "first")).await;
    store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let first = store.revocations_after(None, 1).await.unwrap().events[0]
        .cursor
        .clone();
    // Redis trims approximately, whole stream nodes (100 entries) at a time: go well past that.
    for index in 0..300 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
    }
    let after_first = store.revocations_after(Some(&first), 1000).await.unwrap();
    assert!(after_first.trimmed, "events after the cursor were dropped");
    assert!(after_first.events.len() < 300);
    assert!(
        store
            .revocations_after(Some("0-0"), 1000)
            .await
            .unwrap()
            .trimmed,
        "a node that started before the first event missed the trimmed ones"
    );
    let latest = after_first.events.last().unwrap().cursor.clone();
    assert!(
        !store
            .revocations_after(Some(&latest), 10)
            .await
            .unwrap()
            .trimmed
    );
}
