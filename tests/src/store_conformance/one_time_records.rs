//! One-time records: tickets (taken once, only at their virtual proxy, within their TTL),
//! login targets, remembered JWTs, first use of a credential, and OpenID Connect logins.

use super::*;
use gatehouse_control_plane::domain::LoginClaim;

conformance!(
    tickets_are_taken_once_and_only_at_their_virtual_proxy,
    tickets_expire,
    concurrent_redemptions_have_one_winner,
    targets_are_kept_for_their_ttl,
    used_jwts_are_remembered_for_their_ttl,
    oidc_logins_are_taken_once_within_their_ttl,
    a_login_is_claimed_only_by_its_browser_and_once,
    a_credential_is_used_once_within_its_ttl,
);

async fn tickets_are_taken_once_and_only_at_their_virtual_proxy(subject: Subject) {
    let store = subject.store;
    let hash = TokenHash::of(&tokens::new_ticket());
    let ticket = Ticket {
        virtual_proxy: "sales".into(),
        user: user("CORP", "alice"),
    };
    store.put_ticket(&hash, &ticket, HOUR).await.unwrap();
    assert_eq!(
        store.take_ticket(&hash, "hr").await.unwrap(),
        None,
        "wrong proxy"
    );
    assert_eq!(
        store.take_ticket(&hash, "sales").await.unwrap(),
        Some(ticket)
    );
    assert_eq!(
        store.take_ticket(&hash, "sales").await.unwrap(),
        None,
        "second use"
    );
}

async fn tickets_expire(subject: Subject) {
    let store = subject.store;
    let hash = TokenHash::of(&tokens::new_ticket());
    let ticket = Ticket {
        virtual_proxy: String::new(),
        user: user("CORP", "alice"),
    };
    store
        .put_ticket(&hash, &ticket, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.take_ticket(&hash, "").await.unwrap(), None);
}

async fn concurrent_redemptions_have_one_winner(subject: Subject) {
    let store = subject.store;
    for _ in 0..5 {
        let hash = TokenHash::of(&tokens::new_ticket());
        let ticket = Ticket {
            virtual_proxy: String::new(),
            user: user("CORP", "alice"),
        };
        store.put_ticket(&hash, &ticket, HOUR).await.unwrap();
        let attempts: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let hash = hash.clone();
                tokio::spawn(async move { store.take_ticket(&hash, "").await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for attempt in attempts {
            winners += usize::from(attempt.await.unwrap().is_some());
        }
        assert_eq!(winners, 1);
    }
}

async fn targets_are_kept_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let target = Target {
        virtual_proxy: "sales".into(),
        uri: "https://portal.example.com/sense/app/1".into(),
    };
    store.put_target("kept", &target, HOUR).await.unwrap();
    store
        .put_target("brief", &target, Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(
        store.get_target("kept").await.unwrap(),
        Some(target.clone())
    );
    assert_eq!(store.get_target("missing").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.get_target("brief").await.unwrap(), None);
    assert_eq!(store.get_target("kept").await.unwrap(), Some(target));
}

async fn used_jwts_are_remembered_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let kept = TokenHash::of("kept.jwt");
    let brief = TokenHash::of("brief.jwt");
    assert!(!store.jwt_remembered(&kept).await.unwrap());
    store.remember_jwt(&kept, HOUR).await.unwrap();
    store
        .remember_jwt(&brief, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(store.jwt_remembered(&kept).await.unwrap());
    assert!(store.jwt_remembered(&brief).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.jwt_remembered(&brief).await.unwrap());
    assert!(store.jwt_remembered(&kept).await.unwrap());
}

async fn oidc_logins_are_taken_once_within_their_ttl(subject: Subject) {
    let store = subject.store;
    let login = OidcLogin {
        virtual_proxy: "sales".into(),
        binding_hash: TokenHash::of("binding").to_text(),
        redirect_uri: "https://gatehouse.example.com/sales/oidc/callback".into(),
        target: "/sales/hub?x=1".into(),
    };
    let state = TokenHash::of(&tokens::new_session_token());
    store.put_oidc_login(&state, &login, HOUR).await.unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let state = state.clone();
            tokio::spawn(async move { store.take_oidc_login(&state).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for attempt in attempts {
        taken.extend(attempt.await.unwrap());
    }
    assert_eq!(taken, vec![login.clone()], "one caller gets the login");
    assert_eq!(store.take_oidc_login(&state).await.unwrap(), None);

    let brief = TokenHash::of(&tokens::new_session_token());
    store
        .put_oidc_login(&brief, &login, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.take_oidc_login(&brief).await.unwrap(), None);
}

async fn a_login_is_claimed_only_by_its_browser_and_once(subject: Subject) {
    let store = subject.store;
    let binding = TokenHash::of("binding").to_text();
    let login = OidcLogin {
        virtual_proxy: "sales".into(),
        binding_hash: binding.clone(),
        redirect_uri: "https://gatehouse.example.com/sales/saml/acs".into(),
        target: "/sales/hub".into(),
    };
    let state = TokenHash::of(&tokens::new_session_token());
    store.put_oidc_login(&state, &login, HOUR).await.unwrap();
    // Another browser's claims, however many, leave the login in place.
    let other = TokenHash::of("another browser").to_text();
    for _ in 0..3 {
        assert_eq!(
            store.claim_login(&state, &other).await.unwrap(),
            LoginClaim::OtherBrowser
        );
    }
    let claims: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let state = state.clone();
            let binding = binding.clone();
            tokio::spawn(async move { store.claim_login(&state, &binding).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            LoginClaim::Taken(login) => taken.push(login),
            LoginClaim::Unknown => {}
            LoginClaim::OtherBrowser => panic!("the right browser was told it is another"),
        }
    }
    assert_eq!(taken, vec![login.clone()], "one claim gets the login");
    assert_eq!(
        store.claim_login(&state, &binding).await.unwrap(),
        LoginClaim::Unknown
    );
    assert_eq!(
        store.claim_login(&state, &other).await.unwrap(),
        LoginClaim::Unknown,
        "a used login is unknown to everyone"
    );

    let brief = TokenHash::of(&tokens::new_session_token());
    store
        .put_oidc_login(&brief, &login, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.claim_login(&brief, &binding).await.unwrap(),
        LoginClaim::Unknown
    );
}

async fn a_credential_is_used_once_within_its_ttl(subject: Subject) {
    let store = subject.store;
    let credential = TokenHash::of(&tokens::new_session_token());
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let credential = credential.clone();
            tokio::spawn(async move { store.first_use(&credential, HOUR).await.unwrap() })
        })
        .collect();
    let mut first = 0;
    for attempt in attempts {
        first += usize::from(attempt.await.unwrap());
    }
    assert_eq!(first, 1, "exactly one caller uses the credential first");
    assert!(!store.first_use(&credential, HOUR).await.unwrap());

    let brief = TokenHash::of(&tokens::new_session_token());
    assert!(
        store
            .first_use(&brief, Duration::from_millis(150))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.first_use(&brief, HOUR).await.unwrap(),
        "forgotten after its ttl"
    );
}
