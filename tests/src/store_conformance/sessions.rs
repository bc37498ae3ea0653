//! Sessions: linked sessions, creation under the per-user cap (refuse and evict), lookup by
//! token and by handle, activity and expiry, deletion, listing per user and page by page, and
//! the client each login came from.

use super::*;

conformance!(
    linked_sessions_are_kept_for_their_ttl,
    sessions_are_found_by_token_and_by_handle,
    a_live_token_cannot_be_reused,
    the_refuse_policy_caps_sessions_per_user_and_proxy,
    the_evict_policy_ends_the_oldest_sessions,
    concurrent_creations_never_exceed_the_cap,
    activity_slides_the_inactivity_expiry,
    the_absolute_expiry_caps_activity,
    deleting_returns_the_session_and_records_a_revocation,
    user_sessions_are_listed_and_deleted_per_proxy,
    listings_page_through_every_session_once,
    unknown_handles_and_tokens_are_absent_not_errors,
    sessions_keep_the_client_their_login_came_from,
);

async fn linked_sessions_are_kept_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let subject_key = TokenHash::of("https://idp.example.com\0alice");
    let brief = TokenHash::of("https://idp.example.com\0bob");
    assert!(
        store
            .linked_sessions(&subject_key)
            .await
            .unwrap()
            .is_empty()
    );
    store.link_session(&subject_key, "h1", HOUR).await.unwrap();
    store.link_session(&subject_key, "h2", HOUR).await.unwrap();
    store.link_session(&subject_key, "h1", HOUR).await.unwrap();
    store
        .link_session(&brief, "h3", Duration::from_millis(150))
        .await
        .unwrap();
    let mut linked = store.linked_sessions(&subject_key).await.unwrap();
    linked.sort();
    assert_eq!(linked, ["h1", "h2"]);
    assert_eq!(store.linked_sessions(&brief).await.unwrap(), ["h3"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.linked_sessions(&brief).await.unwrap().is_empty());
    assert_eq!(store.linked_sessions(&subject_key).await.unwrap().len(), 2);
}

async fn sessions_are_found_by_token_and_by_handle(subject: Subject) {
    let store = subject.store;
    let (token, session) = create(&*store, "sales", user("CORP", "alice")).await;
    assert!(!session.handle.contains(&token));
    assert_eq!(session.user, user("CORP", "alice"));
    assert_eq!(session.created, session.last_active);
    let by_token = store
        .session_by_token(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    // Timestamps are kept to the millisecond.
    let millis = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(by_token.handle, session.handle);
    assert_eq!(
        by_token.user, session.user,
        "attributes with repeated names keep their order"
    );
    assert_eq!(by_token.virtual_proxy, "sales");
    assert_eq!(millis(by_token.created), millis(session.created));
    assert_eq!(
        millis(by_token.absolute_expiry),
        millis(session.absolute_expiry)
    );
    assert_eq!(by_token.inactivity_timeout, HOUR);
    let by_handle = store
        .session_by_handle(&session.handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_handle, by_token);
}

async fn a_live_token_cannot_be_reused(subject: Subject) {
    let store = subject.store;
    let (token, _) = create(&*store, "", user("CORP", "alice")).await;
    let (_, mut again) = new_session("", user("CORP", "bob"), HOUR, HOUR);
    again.token_hash = TokenHash::of(&token);
    assert!(matches!(
        store.create_session(again, ROOMY).await.unwrap(),
        CreateOutcome::TokenInUse
    ));
    let holder = store
        .session_by_token(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.user.id, "alice");
}

async fn the_refuse_policy_caps_sessions_per_user_and_proxy(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 2,
        policy: CapPolicy::Refuse,
    };
    for _ in 0..2 {
        let (_, new) = new_session("sales", user("CORP", "alice"), HOUR, HOUR);
        created(store.create_session(new, cap).await.unwrap());
    }
    // Same user in other letter case is the same user.
    let (token, new) = new_session("sales", user("corp", "ALICE"), HOUR, HOUR);
    assert!(matches!(
        store.create_session(new, cap).await.unwrap(),
        CreateOutcome::CapReached
    ));
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None,
        "a refused session leaves nothing behind"
    );
    // Another virtual proxy and another user have caps of their own.
    let (_, new) = new_session("hr", user("CORP", "alice"), HOUR, HOUR);
    created(store.create_session(new, cap).await.unwrap());
    let (_, new) = new_session("sales", user("CORP", "bob"), HOUR, HOUR);
    created(store.create_session(new, cap).await.unwrap());
}

async fn the_evict_policy_ends_the_oldest_sessions(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 2,
        policy: CapPolicy::EvictOldest,
    };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
        handles.push(
            created(store.create_session(new, cap).await.unwrap())
                .0
                .handle,
        );
        // Creation times order eviction; keep them apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
    let (newest, evicted) = created(store.create_session(new, cap).await.unwrap());
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].handle, handles[0]);
    assert_eq!(store.session_by_handle(&handles[0]).await.unwrap(), None);
    let remaining: Vec<String> = store
        .user_sessions("", &key("CORP", "alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(remaining, vec![handles[1].clone(), newest.handle]);
    let revocations = store.revocations_after(None, 100).await.unwrap();
    assert_eq!(revocations.events.len(), 1);
    assert_eq!(revocations.events[0].handle, handles[0]);
    assert_eq!(revocations.events[0].reason, RevocationReason::Evicted);
}

async fn concurrent_creations_never_exceed_the_cap(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 3,
        policy: CapPolicy::Refuse,
    };
    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
                store.create_session(new, cap).await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        created += usize::from(matches!(
            attempt.await.unwrap(),
            CreateOutcome::Created { .. }
        ));
    }
    assert_eq!(created, 3);
    assert_eq!(
        store
            .user_sessions("", &key("CORP", "alice"))
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn activity_slides_the_inactivity_expiry(subject: Subject) {
    let store = subject.store;
    let idle = Duration::from_millis(600);
    let (_, new) = new_session("", user("CORP", "alice"), idle, HOUR);
    let (active, _) = created(store.create_session(new, ROOMY).await.unwrap());
    let (_, new) = new_session("", user("CORP", "bob"), idle, HOUR);
    let (idle_session, _) = created(store.create_session(new, ROOMY).await.unwrap());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let touched = store
            .touch_session(&active.handle, SystemTime::now())
            .await
            .unwrap()
            .expect("an active session stays");
        assert!(touched.last_active > active.last_active);
        assert!(touched.inactivity_expiry() > active.inactivity_expiry());
    }
    // 900 ms in: the untouched session has expired, the touched one lives.
    assert_eq!(
        store.session_by_handle(&idle_session.handle).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .touch_session(&idle_session.handle, SystemTime::now())
            .await
            .unwrap(),
        None,
        "activity cannot revive an expired session"
    );
    assert!(
        store
            .session_by_handle(&active.handle)
            .await
            .unwrap()
            .is_some()
    );
}

async fn the_absolute_expiry_caps_activity(subject: Subject) {
    let store = subject.store;
    let (token, new) = new_session("", user("CORP", "alice"), HOUR, Duration::from_millis(500));
    let (session, _) = created(store.create_session(new, ROOMY).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let touched = store
        .touch_session(&session.handle, SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.inactivity_expiry(), touched.absolute_expiry);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.session_by_handle(&session.handle).await.unwrap(),
        None
    );
}

async fn deleting_returns_the_session_and_records_a_revocation(subject: Subject) {
    let store = subject.store;
    let (token, session) = create(&*store, "sales", user("CORP", "alice")).await;
    let deleted = store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.handle, session.handle);
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.session_by_handle(&session.handle).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .user_sessions("sales", &key("CORP", "alice"))
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(events.len(), 1, "one deletion, one event");
    assert_eq!(events[0].handle, session.handle);
    assert_eq!(events[0].virtual_proxy, "sales");
    assert_eq!(events[0].reason, RevocationReason::Deleted);
}

async fn user_sessions_are_listed_and_deleted_per_proxy(subject: Subject) {
    let store = subject.store;
    let (_, first) = create(&*store, "sales", user("CORP", "alice")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, second) = create(&*store, "sales", user("corp", "Alice")).await;
    let (_, other_proxy) = create(&*store, "hr", user("CORP", "alice")).await;
    let (_, other_user) = create(&*store, "sales", user("CORP", "bob")).await;

    let listed: Vec<String> = store
        .user_sessions("sales", &key("Corp", "ALICE"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(
        listed,
        vec![first.handle.clone(), second.handle.clone()],
        "oldest first"
    );

    let deleted: HashSet<String> = store
        .delete_user_sessions(
            "sales",
            &key("CORP", "alice"),
            RevocationReason::UserLoggedOut,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(
        deleted,
        HashSet::from([first.handle.clone(), second.handle.clone()])
    );
    assert_eq!(store.session_by_handle(&first.handle).await.unwrap(), None);
    assert!(
        store
            .session_by_handle(&other_proxy.handle)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session_by_handle(&other_user.handle)
            .await
            .unwrap()
            .is_some()
    );
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.reason == RevocationReason::UserLoggedOut)
    );
    assert!(
        store
            .delete_user_sessions(
                "sales",
                &key("CORP", "alice"),
                RevocationReason::UserLoggedOut
            )
            .await
            .unwrap()
            .is_empty()
    );
}

async fn listings_page_through_every_session_once(subject: Subject) {
    let store = subject.store;
    let mut expected_sales = HashSet::new();
    let mut expected_all = HashSet::new();
    for index in 0..25 {
        let proxy = if index % 3 == 0 { "hr" } else { "sales" };
        let (_, session) = create(&*store, proxy, user("CORP", &format!("user{index}"))).await;
        if proxy == "sales" {
            expected_sales.insert(session.handle.clone());
        }
        expected_all.insert(session.handle);
    }
    for (filter, expected) in [(None, &expected_all), (Some("sales"), &expected_sales)] {
        let mut seen = HashSet::new();
        let mut token = String::new();
        for _ in 0..100 {
            let page = store.list_sessions(filter, 7, &token).await.unwrap();
            assert!(page.sessions.len() <= 7);
            for session in page.sessions {
                assert!(filter.is_none_or(|vp| session.virtual_proxy == vp));
                assert!(seen.insert(session.handle), "listed twice");
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert!(token.is_empty(), "listing did not end");
        assert_eq!(&seen, expected);
    }
    assert!(matches!(
        store.list_sessions(None, 7, "not a token!").await,
        Err(StoreError::InvalidPageToken)
    ));
}

async fn unknown_handles_and_tokens_are_absent_not_errors(subject: Subject) {
    let store = subject.store;
    for handle in ["", "nonsense", "a.b", "*", "{x}.y", &"x".repeat(1000)] {
        assert_eq!(
            store.session_by_handle(handle).await.unwrap(),
            None,
            "{handle}"
        );
        assert_eq!(
            store
                .delete_session(handle, RevocationReason::Deleted)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .touch_session(handle, SystemTime::now())
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .session_by_token(&TokenHash::of("never issued"))
            .await
            .unwrap(),
        None
    );
    store.ping().await.unwrap();
}

/// SCAN answers a cursor with the same keys only while Redis's table keeps its shape: while it
/// grows (and rehashes step by step, each command moving a bucket), a listing that asked a
/// cursor twice would list some sessions twice and miss others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_listing_lists_each_session_once_while_the_keyspace_grows() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    // Rehashing moves on only with commands, never in the background: the listing meets the
    // table mid-rehash.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("activerehashing")
        .arg("no")
        .query_async(&mut redis)
        .await
        .unwrap();
    let subject = on_redis(
        StoreConfig {
            redis_url: server.url(),
            ..StoreConfig::default()
        },
        1000,
        Box::new(()),
    );
    let store = subject.store;
    let mut expected = HashSet::new();
    for index in 0..40 {
        let (_, session) = create(&*store, "sales", user("CORP", &format!("user{index}"))).await;
        expected.insert(session.handle);
    }
    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut other_keys = 0;
    for _ in 0..200 {
        let page = store.list_sessions(None, 3, &token).await.unwrap();
        for session in page.sessions {
            assert!(
                seen.insert(session.handle.clone()),
                "{} listed twice",
                session.handle
            );
        }
        // Keys that are not sessions, enough to make the table grow again and again.
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            pipe.cmd("SET").arg(format!("other:{other_keys}")).arg("x");
            other_keys += 1;
        }
        let _: () = pipe.query_async(&mut redis).await.unwrap();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "listing did not end");
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "never listed: {missing:?}");
    assert_eq!(seen, expected);
}

async fn sessions_keep_the_client_their_login_came_from(subject: Subject) {
    let store = subject.store;
    let recorded = ClientInfo::new("192.0.2.44", "Mozilla/5.0 (conformance)");
    let (token, session) = create(&*store, "sales", user("CORP", "alice")).await;
    assert_eq!(session.client, recorded);
    let (_, mut unrecorded) = new_session("sales", user("CORP", "alice"), HOUR, 2 * HOUR);
    unrecorded.client = ClientInfo::default();
    let (bare, _) = created(store.create_session(unrecorded, ROOMY).await.unwrap());

    let by_token = store
        .session_by_token(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_token.client, recorded);
    let by_handle = store
        .session_by_handle(&session.handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_handle.client, recorded);
    let touched = store
        .touch_session(&session.handle, SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched.client, recorded,
        "activity keeps what the login recorded"
    );
    let listed = store
        .user_sessions("sales", &key("corp", "alice"))
        .await
        .unwrap();
    let clients: Vec<(&str, &ClientInfo)> = listed
        .iter()
        .map(|listed| (listed.handle.as_str(), &listed.client))
        .collect();
    assert_eq!(clients.len(), 2, "{listed:?}");
    assert!(clients.contains(&(session.handle.as_str(), &recorded)));
    assert!(clients.contains(&(bare.handle.as_str(), &ClientInfo::default())));
    let page = store.list_sessions(Some("sales"), 10, "").await.unwrap();
    assert!(page.sessions.iter().any(|listed| listed.client == recorded));
    let deleted = store
        .delete_session(&session.handle, RevocationReason::Logout)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.client, recorded);
}
