//! Micro-benchmarks of the per-request work on the cache-hit path: reading the session cookie,
//! hashing the token and looking it up in the session cache, and rewriting the request headers
//! for the upstream. The fixtures imitate a browser talking to a Qlik-style upstream behind the
//! virtual proxy `sales`; they are built outside the timed code.
//!
//! `cargo bench -p gatehouse-data-plane --bench hot_path` (add `-- --test` to run each once).

// A bench whose fixture is wrong should stop loudly, as a test would.
#![allow(clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gatehouse_data_plane::assertion::KeySet;
use gatehouse_data_plane::auth::cookie;
use gatehouse_data_plane::auth::rules::{self, AccessRule};
use gatehouse_data_plane::cache::{CachedSession, Lookup, SessionCache, TokenKey};
use gatehouse_data_plane::proxy::headers;
use gatehouse_data_plane::request::{hygiene, path};
use gatehouse_data_plane::virtual_proxy::VirtualProxy;
use gatehouse_proto::v1 as pb;
use gatehouse_runtime::clock::SystemClock;
use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};

const COOKIE_NAME: &str = "X-Qlik-Session-sales";
/// A session token as the control plane makes them: 32 random bytes, URL-safe base64.
const TOKEN: &str = "q3Jx0vN8kZl2Yc7Rb-HgT1sWm4Ea9Ud6Pf_Ki5Lo0Qw";
/// What a browser sends besides our cookie: analytics, consent and preference cookies.
const OTHER_COOKIES: &str = "_ga=GA1.1.1187653412.1732112458; \
    _ga_XJ4N2Q7LPB=GS1.1.1732456011.14.1.1732456274.0.0.0; \
    _gid=GA1.2.2098765432.1732456011; \
    _gcl_au=1.1.1593827461.1732112458; \
    _fbp=fb.1.1732112458123.918273645; \
    _hjSessionUser_3141592=eyJpZCI6IjU4ZjJlYTFkLTRiOGMtNWQ3MS1hMmU5LTBmYzM2ZDg0YjE3NyJ9; \
    ajs_anonymous_id=%22c7a3e5d2-91b4-4f60-8e2a-6d1f0b9c3a47%22; \
    OptanonConsent=isGpcEnabled=0&datestamp=Sun+Nov+24+2026&version=202409.1.0&groups=C0001%3A1%2CC0002%3A1; \
    intercom-id-x9f2kq=3f6b1c2e-8d47-4a95-b0e1-7c2d9f5a6e38; \
    lang=en-US";

fn session_cookie_only() -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert(&mut headers, "cookie", &format!("{COOKIE_NAME}={TOKEN}"));
    headers
}

/// Our cookie last: it is the browser's newest, and `read` has to walk past all the others.
fn session_cookie_among_10() -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert(
        &mut headers,
        "cookie",
        &format!("{OTHER_COOKIES}; {COOKIE_NAME}={TOKEN}"),
    );
    headers
}

fn no_session_cookie() -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert(&mut headers, "cookie", OTHER_COOKIES);
    headers
}

/// A Chrome navigation to a Qlik hub page, with a session cookie, as the node receives it
/// (after it has added `traceparent`).
fn browser_request() -> HeaderMap {
    let mut headers = session_cookie_among_10();
    for (name, value) in [
        ("host", "analytics.example.com"),
        ("connection", "keep-alive"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\", \"Google Chrome\";v=\"131\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Windows\""),
        ("upgrade-insecure-requests", "1"),
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
             (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
             image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        ),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-dest", "document"),
        (
            "referer",
            "https://analytics.example.com/sales/hub/stream/mine",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        insert(&mut headers, name, value);
    }
    headers
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    headers.insert(
        name,
        HeaderValue::from_str(value).expect("fixture header values are valid"),
    );
}

fn proxy() -> VirtualProxy {
    VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "sales".into(),
            cookie_name: COOKIE_NAME.into(),
            proxy_id: "gatehouse".into(),
            ..Default::default()
        },
        None,
    )
    .expect("the fixture virtual proxy is valid")
}

/// The same proxy sending a signed identity assertion, with one key.
fn signing_proxy() -> VirtualProxy {
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .expect("a P-256 key");
    let mut proxy = VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "sales".into(),
            cookie_name: COOKIE_NAME.into(),
            proxy_id: "gatehouse".into(),
            identity_assertion: Some(pb::IdentityAssertion {
                header: "x-gatehouse-assertion".into(),
                audience: "gatehouse:virtual-proxy:/sales".into(),
                issuer: "gatehouse".into(),
                lifetime: Some(prost_types::Duration {
                    seconds: 120,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        },
        None,
    )
    .expect("the fixture virtual proxy is valid");
    let keys = Arc::new(KeySet::from_proto(&[pb::AssertionKey {
        id: "k1".into(),
        pkcs8: pkcs8.as_ref().to_vec(),
        active_from: Some(SystemTime::UNIX_EPOCH.into()),
    }]));
    if let Some(assertion) = &mut proxy.identity.assertion {
        assertion.use_keys(keys);
    }
    proxy
}

fn session() -> Arc<CachedSession> {
    Arc::new(CachedSession {
        handle: "0b7c9e2a4f1d4e8a9c3b5d7f1e2a4c6b".into(),
        virtual_proxy: "sales".into(),
        user_directory: "CORP".into(),
        user_id: "alice.smith".into(),
        attributes: vec![
            ("group".into(), "Sales EMEA".into()),
            ("group".into(), "Analysts".into()),
            ("email".into(), "alice.smith@example.com".into()),
        ],
        absolute_expiry: SystemTime::now() + Duration::from_secs(8 * 3600),
        assertion: Default::default(),
    })
}

/// A cache holding 100k sessions, `TOKEN`'s among them. Room for twice as many, so no shard
/// is full and every insert stays; a TTL long enough for every entry to stay fresh.
fn full_cache() -> SessionCache {
    let hour = Duration::from_secs(3600);
    // The node's own clock: what a request reads on a hit is part of what is measured.
    let cache = SessionCache::new(200_000, hour, hour, Arc::new(SystemClock));
    for index in 1..100_000 {
        let mut other = (*session()).clone();
        other.handle = format!("handle-{index}");
        cache.insert(TokenKey::of(&format!("token-{index}")), Arc::new(other));
    }
    cache.insert(TokenKey::of(TOKEN), session());
    assert_eq!(cache.len(), 100_000);
    cache
}

fn cookie_read(c: &mut Criterion) {
    for (name, headers) in [
        ("cookie/read/only", session_cookie_only()),
        ("cookie/read/among_10", session_cookie_among_10()),
        ("cookie/read/absent_among_10", no_session_cookie()),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| cookie::read(black_box(&headers), black_box(COOKIE_NAME)));
        });
    }
}

fn cache_lookup(c: &mut Criterion) {
    let cache = full_cache();
    let hit = TokenKey::of(TOKEN);
    let miss = TokenKey::of("a-token-this-node-has-never-seen-0123456789");
    assert!(matches!(cache.get(&hit), Lookup::Fresh(_)));
    assert!(matches!(cache.get(&miss), Lookup::Missing));

    c.bench_function("cache/token_key", |b| {
        b.iter(|| TokenKey::of(black_box(TOKEN)));
    });
    c.bench_function("cache/get/hit_of_100k", |b| {
        b.iter(|| cache.get(black_box(&hit)));
    });
    c.bench_function("cache/get/miss_of_100k", |b| {
        b.iter(|| cache.get(black_box(&miss)));
    });
}

fn upstream_headers(c: &mut Criterion) {
    let proxy = proxy();
    let session = session();
    let peer: SocketAddr = "203.0.113.24:51812".parse().expect("a socket address");
    let session_cookies = vec![COOKIE_NAME.to_owned()];
    let request = browser_request();

    let mut rewritten = request.clone();
    headers::for_upstream(
        &mut rewritten,
        &proxy,
        Some(&session),
        headers::Hop {
            peer,
            secure: true,
            trusted_proxy: false,
            websocket: false,
        },
        &session_cookies,
    );
    assert!(rewritten.contains_key("x-qlik-user"));
    assert!(
        !rewritten[COOKIE]
            .to_str()
            .is_ok_and(|c| c.contains(COOKIE_NAME))
    );

    c.bench_function("headers/for_upstream/browser_request", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |headers| {
                headers::for_upstream(
                    headers,
                    &proxy,
                    Some(&session),
                    headers::Hop {
                        peer: black_box(peer),
                        secure: true,
                        trusted_proxy: false,
                        websocket: false,
                    },
                    &session_cookies,
                );
            },
            BatchSize::SmallInput,
        );
    });
}

/// Everything above in the order a request does it, from the request's headers to the
/// headers the upstream receives.
fn per_request(c: &mut Criterion) {
    // With the assertion on, the first request signs and the rest reuse the signature kept
    // on the cache entry: the difference between the two is what an assertion costs a hit.
    for (name, proxy) in [
        ("per_request/cache_hit", proxy()),
        ("per_request/cache_hit_signed_assertion", signing_proxy()),
    ] {
        per_request_through(c, name, &proxy);
    }
}

fn per_request_through(c: &mut Criterion, name: &str, proxy: &VirtualProxy) {
    let cache = full_cache();
    let peer: SocketAddr = "203.0.113.24:51812".parse().expect("a socket address");
    let session_cookies = vec![COOKIE_NAME.to_owned()];
    let request = browser_request();

    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || request.clone(),
            |headers| {
                let token = cookie::read(headers, &proxy.cookie_name).expect("a session cookie");
                let Lookup::Fresh(session) = cache.get(&TokenKey::of(token)) else {
                    panic!("the session is cached and fresh");
                };
                headers::for_upstream(
                    headers,
                    proxy,
                    Some(&session),
                    headers::Hop {
                        peer: black_box(peer),
                        secure: true,
                        trusted_proxy: false,
                        websocket: false,
                    },
                    &session_cookies,
                );
            },
            BatchSize::SmallInput,
        );
    });
}

/// What request hygiene adds to every request: the arrival checks (underscore headers, one
/// well-formed `Host`), the path-spelling check, and access rules over a plain path and over
/// one that needs decoding and Unicode folding.
fn request_hygiene(c: &mut Criterion) {
    let mut request = http::Request::new(());
    *request.uri_mut() = http::Uri::from_static("/sales/hub/app/0b7e4c1a");
    *request.headers_mut() = browser_request();
    assert!(hygiene::before_routing(&mut request.clone()).is_ok());
    c.bench_function("hygiene/before_routing/browser_request", |b| {
        b.iter_batched_ref(
            || request.clone(),
            hygiene::before_routing,
            BatchSize::SmallInput,
        );
    });
    c.bench_function("hygiene/check_spelling/plain_path", |b| {
        b.iter(|| {
            path::check_spelling(
                black_box("/sales/hub/app/0b7e4c1a"),
                path::AllowedSpellings::default(),
            )
        });
    });
    let rules: Vec<AccessRule> = ["/admin", "/settings", "/qrs"]
        .into_iter()
        .map(|prefix| AccessRule {
            path_prefix: prefix.to_owned(),
            folded_prefix: rules::fold(prefix),
            methods: Vec::new(),
            allow: false,
            user_directory: None,
            user_id: None,
            attribute: None,
            scope: rules::Scope::Any,
        })
        .collect();
    let user = session();
    for (name, path) in [
        ("rules/denied/plain_path", "/hub/app/0b7e4c1a"),
        ("rules/denied/encoded_path", "/hub/caf%C3%A9/men%C3%BC"),
    ] {
        assert!(rules::denied(&rules, path, "GET", &user).is_none());
        c.bench_function(name, |b| {
            b.iter(|| rules::denied(black_box(&rules), black_box(path), "GET", &user));
        });
    }
}

criterion_group!(
    benches,
    cookie_read,
    cache_lookup,
    upstream_headers,
    per_request,
    request_hygiene
);
criterion_main!(benches);
