//! JWT bearer verification for virtual proxies with `[virtual_proxies.jwt]`.
//!
//! Tokens are verified here, in the control plane, and never on a data-plane node: the keys
//! (and the JWKS file) live in one place, and a node only sees the session a token maps to.
//! Only public-key algorithms are accepted, each key only for its own family, so neither
//! `alg: none` nor an HMAC token "signed" with a public key's bytes can pass.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::config::JwtConfig;
use crate::domain::{Attribute, User};
use crate::error::Error;
use crate::virtual_proxies::PerProxy;

/// The `alg` values a configuration may accept. Only public-key algorithms: `none` never,
/// and no HMAC, so a public key can never be used as a shared secret (the `alg` confusion
/// attack).
pub const ACCEPTED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Longest bearer token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

pub use crate::jwt_session::session_token;

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Verified {
    pub user: User,
    /// The token's `exp`: its session ends then at the latest.
    pub expires: SystemTime,
}

/// One verifier per virtual proxy, rebuilt when that proxy's `jwt` configuration changes.
#[derive(Debug, Default)]
pub struct JwtVerifiers(PerProxy<JwtConfig, Verifier>);

impl JwtVerifiers {
    pub fn verifier(&self, prefix: &str, config: &JwtConfig) -> Result<Arc<Verifier>, Error> {
        self.0.get(prefix, config, |config| {
            Verifier::new(config).map_err(|detail| {
                tracing::error!(prefix, %detail, "JWT keys cannot be loaded");
                Error::Unauthenticated("bearer tokens cannot be verified right now")
            })
        })
    }
}

#[derive(Debug, Clone)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

#[derive(Debug)]
struct Jwks {
    keys: Vec<Key>,
    read_at: Option<Instant>,
    /// The last read failed: a token whose key is not among `keys` may still be good.
    failed: bool,
}

type JwksClient = crate::outbound::HttpClient;

pub struct Verifier {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    pem_keys: Vec<Key>,
    jwks: Mutex<Jwks>,
    /// One JWKS re-read at a time; the others wait for it and then use its keys.
    refreshing: tokio::sync::Mutex<()>,
    client: Option<JwksClient>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: JwtConfig) -> Result<Self, String> {
        let client = match (&config.jwks_file, &config.jwks_url) {
            (None, Some(_)) => Some(crate::outbound::client(config.ca_file.as_deref())?),
            _ => None,
        };
        Self::with_client(config, client)
    }

    /// A verifier fetching `jwks_url` with `client` (which may trust extra CAs).
    pub fn with_client(config: JwtConfig, client: Option<JwksClient>) -> Result<Self, String> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|alg| {
                alg.parse::<Algorithm>()
                    .map_err(|_| format!("unknown algorithm {alg:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pem_keys = Vec::new();
        for path in &config.public_keys {
            pem_keys.push(Key {
                kid: None,
                key: read_pem_key(path)?,
            });
        }
        Ok(Self {
            config,
            algorithms,
            pem_keys,
            jwks: Mutex::new(Jwks {
                keys: Vec::new(),
                read_at: None,
                failed: false,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            client,
        })
    }

    fn has_jwks(&self) -> bool {
        self.config.jwks_file.is_some() || self.client.is_some()
    }

    /// Re-reads the JWKS (file or URL) unless it was read less than `jwks_min_refresh` ago,
    /// so tokens naming random `kid`s cannot make the control plane read it more often. A
    /// JWKS that cannot be read keeps the keys read before.
    async fn reload_jwks(&self) -> Result<(), String> {
        if !self.has_jwks() {
            return Ok(());
        }
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let mut jwks = self.jwks.lock().unwrap_or_else(PoisonError::into_inner);
            if jwks
                .read_at
                .is_some_and(|at| at.elapsed() < self.config.jwks_min_refresh)
            {
                return Ok(());
            }
            // Set before reading, so a failing source is not retried on every request.
            jwks.read_at = Some(Instant::now());
        }
        let read = self.read_jwks().await;
        let mut jwks = self.jwks.lock().unwrap_or_else(PoisonError::into_inner);
        jwks.failed = read.is_err();
        jwks.keys = read?;
        Ok(())
    }

    /// The keys of the JWKS file or URL.
    async fn read_jwks(&self) -> Result<Vec<Key>, String> {
        let (text, source) = match (&self.config.jwks_file, &self.client, &self.config.jwks_url) {
            (Some(path), _, _) => (
                tokio::fs::read(path)
                    .await
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
                path.display().to_string(),
            ),
            (None, Some(client), Some(url)) => (
                crate::outbound::get(client, url).await?.to_vec(),
                url.clone(),
            ),
            _ => return Ok(Vec::new()),
        };
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|error| format!("{source} is not a JWKS: {error}"))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|jwk| {
                DecodingKey::from_jwk(jwk).ok().map(|key| Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                })
            })
            .collect();
        Ok(keys)
    }

    fn jwks_read(&self) -> bool {
        self.jwks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_at
            .is_some()
    }

    fn jwks_keys(&self) -> Vec<Key> {
        self.jwks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss` and `aud`, and maps the claims to a
    /// user. The error's text is short and safe to show the client; detail goes to the log.
    pub async fn verify(&self, token: &str) -> Result<Verified, Error> {
        let claims = self.claims(token).await?;
        self.map_claims(&claims)
    }

    /// The claims of a token whose signature, algorithm, `exp`, `nbf`, `iss` and `aud` check
    /// out.
    pub async fn claims(&self, token: &str) -> Result<Map<String, Value>, Error> {
        let refuse = Error::Unauthenticated;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(refuse("the bearer token is not a JWT"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            refuse("the bearer token is not a JWT or its algorithm is not accepted")
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refuse("the token's algorithm is not accepted"));
        }
        let family = header.alg.family();
        if self.has_jwks()
            && !self.jwks_read()
            && let Err(detail) = self.reload_jwks().await
        {
            tracing::warn!(%detail, "JWKS cannot be read");
        }
        let mut kid_known = true;
        let mut candidates: Vec<Key> = match &header.kid {
            Some(kid) => {
                let mut found = keyed(self.jwks_keys(), kid);
                if found.is_empty() && self.has_jwks() {
                    // A new signing key: the JWKS may have been rotated since it was read.
                    if let Err(detail) = self.reload_jwks().await {
                        tracing::warn!(%detail, "JWKS re-read failed; keeping the keys read before");
                    }
                    found = keyed(self.jwks_keys(), kid);
                }
                kid_known = !found.is_empty();
                found
            }
            None => self.jwks_keys(),
        };
        // Keys from PEM files have no `kid`: they are tried for any token.
        candidates.extend(self.pem_keys.iter().cloned());
        candidates.retain(|key| key.key.family() == family);
        let unknown_key = "the token is signed with an unknown key";
        if candidates.is_empty() {
            // The key may well be in a JWKS that cannot be read right now: not the token's
            // fault, so not a 401 (which would make a client discard a good token).
            if self
                .jwks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .failed
            {
                return Err(Error::ProviderUnavailable(
                    "the token issuer's keys cannot be read right now; try again shortly",
                ));
            }
            return Err(refuse(unknown_key));
        }
        let validation = self.validation(header.alg);
        let mut last = refuse(if kid_known {
            "the token's signature does not verify"
        } else {
            unknown_key
        });
        for key in &candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => {
                    let reason = match error.kind() {
                        ErrorKind::InvalidSignature | ErrorKind::InvalidKeyFormat => continue,
                        ErrorKind::ExpiredSignature => "the token has expired",
                        ErrorKind::ImmatureSignature => "the token is not valid yet",
                        ErrorKind::InvalidAudience => "the token is for another audience",
                        ErrorKind::InvalidIssuer => "the token is from another issuer",
                        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                        _ => {
                            tracing::debug!(%error, "JWT refused");
                            "the bearer token is not valid"
                        }
                    };
                    last = refuse(reason);
                    break;
                }
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // Only the accepted algorithms of the key's family: jsonwebtoken refuses every token
        // (InvalidAlgorithm) when the list names another family, so `["RS256", "ES256"]`
        // would accept nothing.
        validation.algorithms = self
            .algorithms
            .iter()
            .copied()
            .filter(|accepted| accepted.family() == alg.family())
            .collect();
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if !self.config.issuers.is_empty() {
            validation.set_issuer(&self.config.issuers);
            required.push("iss");
        }
        if !self.config.audiences.is_empty() {
            validation.set_audience(&self.config.audiences);
            required.push("aud");
        }
        // With no audience configured, a token that names one is refused (it is meant for
        // someone else).
        validation.set_required_spec_claims(&required);
        validation
    }

    fn map_claims(&self, claims: &Map<String, Value>) -> Result<Verified, Error> {
        let refuse = Error::Unauthenticated;
        let rules = ClaimRules {
            user_id_claim: &self.config.user_id_claim,
            user_directory_claim: self.config.user_directory_claim.as_deref(),
            user_directory: self.config.user_directory.as_deref(),
            attributes: &self.config.attributes,
        };
        let user = user_from_claims(claims, &rules).map_err(refuse)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(refuse("the token lacks a required claim"))?;
        let expires = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(exp))
            .ok_or(refuse("the bearer token is not valid"))?;
        Ok(Verified { user, expires })
    }
}

/// How a token's claims name its user; shared by JWT bearer tokens and OpenID Connect.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    pub user_id_claim: &'a str,
    /// Wins over `user_directory` when the claims have it.
    pub user_directory_claim: Option<&'a str>,
    pub user_directory: Option<&'a str>,
    /// Attribute name → claim; an array claim gives one attribute per element.
    pub attributes: &'a std::collections::BTreeMap<String, String>,
}

/// The user `claims` name under `rules`; the error is a short reason for the client.
pub fn user_from_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
) -> Result<User, &'static str> {
    let id = claims
        .get(rules.user_id_claim)
        .and_then(scalar)
        .ok_or("the token names no user")?;
    let directory = rules
        .user_directory_claim
        .and_then(|claim| claims.get(claim))
        .and_then(scalar)
        .or_else(|| rules.user_directory.map(str::to_owned))
        .ok_or("the token names no user directory")?;
    let mut attributes = Vec::new();
    for (name, claim) in rules.attributes {
        let values = match claims.get(claim) {
            Some(Value::Array(values)) => values.iter().filter_map(scalar).collect(),
            Some(value) => scalar(value).into_iter().collect(),
            None => Vec::new(),
        };
        attributes.extend(values.into_iter().map(|value| Attribute {
            name: name.clone(),
            value,
        }));
    }
    User::new(&directory, &id, attributes).map_err(|_| "the token's user is not valid")
}

fn keyed(keys: Vec<Key>, kid: &str) -> Vec<Key> {
    keys.into_iter()
        .filter(|key| key.kid.as_deref() == Some(kid))
        .collect()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The public key in a PEM file; the error names the file. Configuration validation calls it
/// too, so a bad key file stops the control plane at start (or a reload) instead of failing
/// every login.
pub fn read_pem_key(path: &std::path::Path) -> Result<DecodingKey, String> {
    let pem =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    pem_key(&pem).map_err(|error| format!("{}: {error}", path.display()))
}

/// A public key from PEM: `PUBLIC KEY`, `RSA PUBLIC KEY`, or a certificate's key.
fn pem_key(pem: &[u8]) -> Result<DecodingKey, String> {
    let text = String::from_utf8_lossy(pem);
    let public_key = if text.contains("BEGIN CERTIFICATE") {
        let (_, der) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|error| format!("not a PEM certificate: {error}"))?;
        let certificate = der
            .parse_x509()
            .map_err(|error| format!("not an X.509 certificate: {error}"))?;
        let spki = STANDARD.encode(certificate.tbs_certificate.subject_pki.raw);
        let lines: Vec<&str> = spki
            .as_bytes()
            .chunks(64)
            .filter_map(|line| std::str::from_utf8(line).ok())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
        .into_bytes()
    } else {
        pem.to_vec()
    };
    DecodingKey::from_rsa_pem(&public_key)
        .or_else(|_| DecodingKey::from_ec_pem(&public_key))
        .or_else(|_| DecodingKey::from_ed_pem(&public_key))
        .map_err(|_| "not an RSA, EC or Ed25519 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_token_depends_on_proxy_and_token() {
        assert_eq!(session_token("a", "x.y.z"), session_token("a", "x.y.z"));
        assert_ne!(session_token("a", "x.y.z"), session_token("b", "x.y.z"));
        assert_ne!(session_token("a", "x.y.z"), session_token("a", "x.y.w"));
    }
}
