//! Flood limits: what keeps one client, or many, from turning requests that cost the node
//! nothing into work for the control plane and its store.
//!
//! Two things cost the store on behalf of someone without a session: a cookie the node has not
//! cached (one `ValidateSession`), and a page load without a session (one stored login
//! target). So:
//! - a **negative cache** (`negative`) answers a token the control plane called unknown
//!   moments ago without asking again;
//! - **token buckets** (`buckets`), per client address and per virtual proxy, bound the
//!   lookups that come back unknown and the logins started; past them the answer is 429 with
//!   `Retry-After`.
//!
//! Nothing here is on the path of a request whose session is cached: the session cache is
//! looked at first, and only its misses and login starts reach these tables. A lookup that
//! finds a session is never charged, so users with sessions are not slowed by a flood of
//! cookies that are not.

pub mod buckets;
pub mod negative;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::refusal::Refusal;
use buckets::{AddressKey, Rate, Table};
use negative::NegativeCache;

/// `[flood]` of the node's configuration.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloodConfig {
    /// How long a token the control plane called unknown is answered so without asking again
    /// (0: never).
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Tokens the negative cache holds.
    pub max_negative: usize,
    /// Client addresses (IPv4, or IPv6 /64) each limit keeps a bucket for.
    pub max_addresses: usize,
    /// Logins started (a login target stored, an OpenID login begun).
    pub login_starts: Limits,
    /// Session lookups the control plane answers unknown.
    pub unknown_tokens: Limits,
}

/// The rates of one kind of event, per client address and per virtual proxy on this node.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub address_per_second: f64,
    pub address_burst: u32,
    pub virtual_proxy_per_second: f64,
    pub virtual_proxy_burst: u32,
}

impl Default for Limits {
    /// Far above what a browser, or an office behind one address, does: a user starts one
    /// login per visit and sends an unknown cookie once after a session ends (the negative
    /// cache answers the repeats), so 20 a second from one address is a script.
    fn default() -> Self {
        Self {
            address_per_second: 20.0,
            address_burst: 200,
            virtual_proxy_per_second: 1000.0,
            virtual_proxy_burst: 2000,
        }
    }
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            negative_ttl: Duration::from_secs(3),
            max_negative: 100_000,
            max_addresses: 100_000,
            login_starts: Limits::default(),
            unknown_tokens: Limits::default(),
        }
    }
}

/// Longest `negative_ttl` accepted: the cache is for repeats within moments, and a token a
/// trusted client chose (`CreateSession`) could be refused on a node for that long if a
/// browser presented it before the session was made.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);

impl FloodConfig {
    /// Why the settings cannot work, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.negative_ttl > MAX_NEGATIVE_TTL {
            return Some("flood.negative_ttl must be at most 60s".to_owned());
        }
        if self.max_negative == 0 || self.max_addresses == 0 {
            return Some(
                "flood.max_negative and flood.max_addresses must be at least 1".to_owned(),
            );
        }
        for (name, limits) in [
            ("login_starts", &self.login_starts),
            ("unknown_tokens", &self.unknown_tokens),
        ] {
            for (scope, per_second, burst) in [
                ("address", limits.address_per_second, limits.address_burst),
                (
                    "virtual_proxy",
                    limits.virtual_proxy_per_second,
                    limits.virtual_proxy_burst,
                ),
            ] {
                if !per_second.is_finite() || per_second < 0.0 {
                    return Some(format!(
                        "flood.{name}.{scope}_per_second must be a number of at least 0 (0: no limit)"
                    ));
                }
                if per_second > 0.0 && burst == 0 {
                    return Some(format!(
                        "flood.{name}.{scope}_burst must be at least 1 when {scope}_per_second is set"
                    ));
                }
            }
        }
        None
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LoginStart,
    UnknownToken,
}

/// Whose limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    VirtualProxy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::LoginStart => "login_start",
            Self::UnknownToken => "unknown_token",
        }
    }
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::VirtualProxy => "virtual_proxy",
        }
    }
}

/// A limit was reached: 429, to try again in `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: Kind,
    pub scope: Scope,
    pub retry_after: u64,
}

impl Limited {
    pub fn refusal(self) -> Refusal {
        let reason = match (self.kind, self.scope) {
            (Kind::LoginStart, Scope::Address) => {
                "too many logins started from this address; try again later"
            }
            (Kind::LoginStart, Scope::VirtualProxy) => {
                "too many logins are being started; try again later"
            }
            (Kind::UnknownToken, Scope::Address) => {
                "too many unknown sessions from this address; try again later"
            }
            (Kind::UnknownToken, Scope::VirtualProxy) => {
                "too many unknown sessions are being checked; try again later"
            }
        };
        Refusal::Limited {
            reason: reason.into(),
            retry_after: self.retry_after,
        }
    }
}

/// One kind of event's buckets.
#[derive(Debug)]
struct Limiter {
    kind: Kind,
    addresses: Table<AddressKey>,
    proxies: Table<String>,
}

/// Virtual proxies a node keeps buckets for; more than any snapshot holds.
const MAX_PROXIES: usize = 10_000;

impl Limiter {
    fn new(kind: Kind, limits: &Limits, max_addresses: usize) -> Self {
        Self {
            kind,
            addresses: Table::new(
                Rate {
                    per_second: limits.address_per_second,
                    burst: limits.address_burst,
                },
                max_addresses,
            ),
            proxies: Table::new(
                Rate {
                    per_second: limits.virtual_proxy_per_second,
                    burst: limits.virtual_proxy_burst,
                },
                MAX_PROXIES,
            ),
        }
    }

    fn limited(&self, scope: Scope, wait: Duration) -> Limited {
        // Whole seconds, rounded up, at least one: what `Retry-After` can say.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Limited {
            kind: self.kind,
            scope,
            retry_after: secs.max(1),
        }
    }

    fn check(&self, proxy: &str, address: IpAddr, now: Instant) -> Result<(), Limited> {
        self.addresses
            .check(&AddressKey::of(address), now)
            .map_err(|wait| self.limited(Scope::Address, wait))?;
        self.proxies
            .check(proxy, now)
            .map_err(|wait| self.limited(Scope::VirtualProxy, wait))
    }

    fn charge(&self, proxy: &str, address: IpAddr, now: Instant) {
        self.addresses.charge(&AddressKey::of(address), now);
        self.proxies.charge(proxy, now);
    }

    fn refund(&self, proxy: &str, address: IpAddr, now: Instant) {
        self.addresses.refund(&AddressKey::of(address), now);
        self.proxies.refund(proxy, now);
    }
}

/// A node's flood limits.
#[derive(Debug)]
pub struct Flood {
    pub negative: NegativeCache,
    login_starts: Limiter,
    unknown_tokens: Limiter,
}

impl Flood {
    pub fn new(config: &FloodConfig) -> Self {
        Self {
            negative: NegativeCache::new(config.negative_ttl, config.max_negative),
            login_starts: Limiter::new(
                Kind::LoginStart,
                &config.login_starts,
                config.max_addresses,
            ),
            unknown_tokens: Limiter::new(
                Kind::UnknownToken,
                &config.unknown_tokens,
                config.max_addresses,
            ),
        }
    }

    /// A login is about to be started for `address` at `proxy`: counted, or refused.
    pub fn start_login(&self, proxy: &str, address: IpAddr, now: Instant) -> Result<(), Limited> {
        self.login_starts.check(proxy, address, now)?;
        self.login_starts.charge(proxy, address, now);
        Ok(())
    }

    /// The login [`start_login`](Self::start_login) counted stored nothing after all (the
    /// control plane could not be reached): it does not count.
    pub fn login_not_started(&self, proxy: &str, address: IpAddr, now: Instant) {
        self.login_starts.refund(proxy, address, now);
    }

    /// Whether `address` may have a token checked at `proxy` now. Counted only once the
    /// answer is "unknown" ([`unknown_token`](Self::unknown_token)).
    pub fn may_look_up(&self, proxy: &str, address: IpAddr, now: Instant) -> Result<(), Limited> {
        self.unknown_tokens.check(proxy, address, now)
    }

    /// The control plane answered a token `address` sent is unknown.
    pub fn unknown_token(&self, proxy: &str, address: IpAddr, now: Instant) {
        self.unknown_tokens.charge(proxy, address, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(limits: Limits) -> Flood {
        Flood::new(&FloodConfig {
            login_starts: limits,
            unknown_tokens: limits,
            ..FloodConfig::default()
        })
    }

    #[test]
    fn an_address_past_its_burst_is_limited_while_another_is_not() {
        let flood = flood(Limits {
            address_per_second: 1.0,
            address_burst: 2,
            ..Limits::default()
        });
        let (now, one, two) = (
            Instant::now(),
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        );
        assert!(flood.start_login("app", one, now).is_ok());
        assert!(flood.start_login("app", one, now).is_ok());
        let limited = flood.start_login("app", one, now).unwrap_err();
        assert_eq!(
            (limited.kind, limited.scope, limited.retry_after),
            (Kind::LoginStart, Scope::Address, 1)
        );
        assert!(flood.start_login("app", two, now).is_ok());
        // The other kind has buckets of its own.
        assert!(flood.may_look_up("app", one, now).is_ok());
    }

    #[test]
    fn a_virtual_proxy_past_its_burst_is_limited_for_every_address() {
        let flood = flood(Limits {
            virtual_proxy_per_second: 0.1,
            virtual_proxy_burst: 3,
            ..Limits::default()
        });
        let now = Instant::now();
        for n in 1..=3 {
            let address = IpAddr::from([198, 51, 100, n]);
            assert!(flood.may_look_up("app", address, now).is_ok());
            flood.unknown_token("app", address, now);
        }
        let limited = flood
            .may_look_up("app", IpAddr::from([203, 0, 113, 9]), now)
            .unwrap_err();
        assert_eq!(limited.scope, Scope::VirtualProxy);
        assert_eq!(limited.retry_after, 10, "one token at 0.1 a second");
        assert!(
            flood
                .may_look_up("hub", IpAddr::from([203, 0, 113, 9]), now)
                .is_ok()
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let config = |limits: Limits| FloodConfig {
            login_starts: limits,
            ..FloodConfig::default()
        };
        assert_eq!(FloodConfig::default().problem(), None);
        let negative = config(Limits {
            address_per_second: -1.0,
            ..Limits::default()
        });
        assert!(
            negative
                .problem()
                .unwrap()
                .contains("flood.login_starts.address_per_second")
        );
        let no_burst = config(Limits {
            virtual_proxy_burst: 0,
            ..Limits::default()
        });
        assert!(
            no_burst
                .problem()
                .unwrap()
                .contains("flood.login_starts.virtual_proxy_burst")
        );
        let long = FloodConfig {
            negative_ttl: Duration::from_secs(61),
            ..FloodConfig::default()
        };
        assert!(long.problem().unwrap().contains("negative_ttl"));
    }

    #[test]
    fn a_limit_renders_as_429_with_retry_after() {
        let limited = Limited {
            kind: Kind::UnknownToken,
            scope: Scope::Address,
            retry_after: 4,
        };
        let response = limited.refusal().into_response();
        assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "4");
    }
}
