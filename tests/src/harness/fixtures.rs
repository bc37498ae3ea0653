//! Shared fixtures of the end-to-end tests: users, configurations with several virtual
//! proxies, a control plane on either store, shortcuts for the calls every test makes, and a
//! dump of everything Redis holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::time::{Duration, SystemTime};

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::session_selector::By;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::harness::redis_topologies::{RedisCluster, SentinelGroup};
use crate::harness::{ControlPlane, RedisServer};

/// A user with no attributes.
pub fn user(directory: &str, id: &str) -> pb::User {
    user_with(directory, id, &[])
}

/// A user with attributes, in the order given.
pub fn user_with(directory: &str, id: &str, attributes: &[(&str, &str)]) -> pb::User {
    pb::User {
        user_directory: directory.to_owned(),
        user_id: id.to_owned(),
        attributes: attributes
            .iter()
            .map(|(name, value)| pb::Attribute {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
    }
}

/// One `[[virtual_proxies]]` entry; `settings` are extra `key = value` lines.
pub fn proxy(prefix: &str, settings: &str) -> String {
    format!("[[virtual_proxies]]\nprefix = \"{prefix}\"\n{settings}\n")
}

/// The `[tickets]` section; `settings` are `key = value` lines.
pub fn tickets(settings: &str) -> String {
    format!("[tickets]\n{settings}\n")
}

/// The `[store]` section for this Redis server, with short timeouts so that an outage is
/// noticed quickly.
pub fn redis_store(server: &RedisServer) -> String {
    format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nconnect_timeout = \"500ms\"\nresponse_timeout = \"1s\"\n",
        server.url()
    )
}

/// Which store a control plane keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    /// The Redis store on a three-master Redis Cluster.
    RedisCluster,
    /// The Redis store on a master (with a replica) found through three sentinels.
    RedisSentinel,
}

/// The Redis processes of a topology, kept as long as the control plane on them.
#[derive(Debug)]
pub enum Topology {
    Cluster(RedisCluster),
    Sentinel(Box<SentinelGroup>),
}

/// A control plane, and the private Redis server (or cluster, or Sentinel group) behind it
/// when it uses one.
#[derive(Debug)]
pub struct Env {
    pub plane: ControlPlane,
    pub redis: Option<RedisServer>,
    pub _topology: Option<Topology>,
}

impl Deref for Env {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        &self.plane
    }
}

impl Env {
    /// Starts a control plane on `backend`; `config` is the rest of its TOML (virtual
    /// proxies, tickets), without a `[store]` section.
    pub async fn start(backend: Backend, config: &str) -> Self {
        match backend {
            Backend::Memory => Self {
                plane: ControlPlane::start(config).await,
                redis: None,
                _topology: None,
            },
            Backend::Redis => {
                let server = RedisServer::start().await;
                let plane = ControlPlane::start(&format!("{}{config}", redis_store(&server))).await;
                Self {
                    plane,
                    redis: Some(server),
                    _topology: None,
                }
            }
            Backend::RedisCluster => {
                let cluster = RedisCluster::start().await;
                let store = cluster.store_toml();
                Self::on_topology(&store, config, Topology::Cluster(cluster)).await
            }
            Backend::RedisSentinel => {
                let group = SentinelGroup::start().await;
                let store = group.store_toml();
                Self::on_topology(&store, config, Topology::Sentinel(Box::new(group))).await
            }
        }
    }

    /// A control plane with the `[store]` table `store` (of `topology`), with short timeouts
    /// so that an outage is noticed quickly.
    async fn on_topology(store: &str, config: &str, topology: Topology) -> Self {
        let store = format!("{store}connect_timeout = \"500ms\"\nresponse_timeout = \"1s\"\n");
        Self {
            plane: ControlPlane::start(&format!("{store}{config}")).await,
            redis: None,
            _topology: Some(topology),
        }
    }

    /// Starts a control plane on a private Redis server.
    pub async fn redis(config: &str) -> Self {
        Self::start(Backend::Redis, config).await
    }

    pub fn redis_server(&self) -> &RedisServer {
        self.redis
            .as_ref()
            .expect("this control plane runs on Redis")
    }

    pub fn redis_server_mut(&mut self) -> &mut RedisServer {
        self.redis
            .as_mut()
            .expect("this control plane runs on Redis")
    }

    /// Creates a session with a generated token; panics if that fails.
    pub async fn create_session(
        &self,
        virtual_proxy: &str,
        user: pb::User,
    ) -> pb::CreateSessionResponse {
        self.try_create_session(virtual_proxy, user, None)
            .await
            .unwrap_or_else(|status| {
                panic!("CreateSession in {virtual_proxy:?} failed: {status:?}")
            })
    }

    pub async fn try_create_session(
        &self,
        virtual_proxy: &str,
        user: pb::User,
        session_token: Option<String>,
    ) -> Result<pb::CreateSessionResponse, Status> {
        self.sessions()
            .create_session(pb::CreateSessionRequest {
                virtual_proxy: virtual_proxy.to_owned(),
                user: Some(user),
                session_token,
            })
            .await
            .map(Response::into_inner)
    }

    pub async fn get_session(&self, selector: pb::SessionSelector) -> Result<pb::Session, Status> {
        self.sessions()
            .get_session(pb::GetSessionRequest {
                session: Some(selector),
            })
            .await
            .map(|response| {
                response
                    .into_inner()
                    .session
                    .expect("GetSession returns a session")
            })
    }

    pub async fn delete_session(
        &self,
        selector: pb::SessionSelector,
    ) -> Result<pb::Session, Status> {
        self.sessions()
            .delete_session(pb::DeleteSessionRequest {
                session: Some(selector),
            })
            .await
            .map(|response| {
                response
                    .into_inner()
                    .session
                    .expect("DeleteSession returns a session")
            })
    }

    pub async fn request_ticket(
        &self,
        virtual_proxy: &str,
        user: pb::User,
        target_id: Option<&str>,
    ) -> Result<pb::RequestTicketResponse, Status> {
        self.authentication()
            .request_ticket(pb::RequestTicketRequest {
                virtual_proxy: virtual_proxy.to_owned(),
                user: Some(user),
                target_id: target_id.map(str::to_owned),
            })
            .await
            .map(Response::into_inner)
    }

    pub async fn redeem_ticket(
        &self,
        virtual_proxy: &str,
        ticket: &str,
    ) -> Result<pb::RedeemTicketResponse, Status> {
        self.node()
            .redeem_ticket(pb::RedeemTicketRequest {
                virtual_proxy: virtual_proxy.to_owned(),
                ticket: ticket.to_owned(),
                client: None,
            })
            .await
            .map(Response::into_inner)
    }

    /// GetCurrentUser with the token as a bearer credential.
    pub async fn current_user(
        &self,
        token: &str,
        virtual_proxy: Option<&str>,
    ) -> Result<pb::Session, Status> {
        let request = bearer(
            pb::GetCurrentUserRequest {
                virtual_proxy: virtual_proxy.map(str::to_owned),
            },
            token,
        );
        self.personal()
            .get_current_user(request)
            .await
            .map(|response| {
                response
                    .into_inner()
                    .session
                    .expect("GetCurrentUser returns a session")
            })
    }

    /// Handles of the user's sessions, as ListUserSessions gives them.
    pub async fn user_handles(
        &self,
        directory: &str,
        id: &str,
        virtual_proxy: Option<&str>,
    ) -> Vec<String> {
        self.sessions()
            .list_user_sessions(pb::ListUserSessionsRequest {
                user_directory: directory.to_owned(),
                user_id: id.to_owned(),
                virtual_proxy: virtual_proxy.map(str::to_owned),
            })
            .await
            .expect("ListUserSessions succeeds")
            .into_inner()
            .sessions
            .into_iter()
            .map(|session| session.handle)
            .collect()
    }
}

pub fn by_token(token: &str) -> pb::SessionSelector {
    pb::SessionSelector {
        by: Some(By::SessionToken(token.to_owned())),
    }
}

pub fn by_handle(handle: &str) -> pb::SessionSelector {
    pb::SessionSelector {
        by: Some(By::Handle(handle.to_owned())),
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_header(message, "authorization", &format!("Bearer {token}"))
}

/// A request carrying a `cookie` header.
pub fn with_cookie<T>(message: T, cookie: &str) -> Request<T> {
    with_header(message, "cookie", cookie)
}

fn with_header<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = value.parse().expect("valid ASCII metadata");
    request.metadata_mut().insert(name, value);
    request
}

/// The error of a call that must fail with `code`; `what` names the call in the message.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> Status {
    match result {
        Ok(value) => panic!("{what}: expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            status
        }
    }
}

/// The session in a response, which must hold one.
pub fn session_of(session: Option<pb::Session>) -> pb::Session {
    session.expect("the response holds a session")
}

pub fn time(timestamp: Option<&prost_types::Timestamp>) -> SystemTime {
    SystemTime::try_from(*timestamp.expect("timestamp is set")).expect("timestamp is in range")
}

/// `b - a`, or minus `a - b`, in seconds.
pub fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// 43 random URL-safe characters (about 256 bits), as a client would choose a token.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::with_capacity(43);
    while token.len() < 43 {
        let mut bits = random_u64();
        for _ in 0..10 {
            if token.len() == 43 {
                break;
            }
            token.push(char::from(
                ALPHABET[usize::try_from(bits % 64).expect("small")],
            ));
            bits /= 64;
        }
    }
    token
}

/// 64 bits from the standard library's randomly keyed SipHash (fresh keys for every call).
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Every key Redis holds, each followed by its whole value, one text to search for secrets.
pub async fn redis_dump(server: &RedisServer) -> String {
    let mut connection = server.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("KEYS *");
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("TYPE");
        let mut command = redis::cmd(match kind.as_str() {
            "string" => "GET",
            "hash" => "HGETALL",
            "zset" => "ZRANGE",
            "set" => "SMEMBERS",
            "list" => "LRANGE",
            "stream" => "XRANGE",
            other => panic!("key {key} has a type this dump does not read: {other}"),
        });
        command.arg(&key);
        match kind.as_str() {
            "zset" => {
                command.arg(0).arg(-1).arg("WITHSCORES");
            }
            "list" => {
                command.arg(0).arg(-1);
            }
            "stream" => {
                command.arg("-").arg("+");
            }
            _ => {}
        }
        let value: redis::Value = command
            .query_async(&mut connection)
            .await
            .expect("read a key");
        dump.push_str(&key);
        dump.push('\n');
        flatten(&value, &mut dump);
    }
    dump
}

fn flatten(value: &redis::Value, out: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
        redis::Value::SimpleString(text) => out.push_str(text),
        redis::Value::Int(number) => out.push_str(&number.to_string()),
        redis::Value::Double(number) => out.push_str(&number.to_string()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        redis::Value::Map(pairs) => {
            for (name, value) in pairs {
                flatten(name, out);
                flatten(value, out);
            }
        }
        _ => {}
    }
    out.push('\n');
}

/// One entry of the revocation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEntry {
    pub handle: String,
    pub vp: String,
    pub reason: String,
}

/// What `XRANGE gatehouse:revocations - +` holds, oldest first.
pub async fn revocations(server: &RedisServer) -> Vec<RevocationEntry> {
    let mut connection = server.connection().await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("gatehouse:revocations")
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE gatehouse:revocations");
    entries
        .into_iter()
        .map(|(id, fields)| {
            let field = |name: &str| {
                fields
                    .get(name)
                    .unwrap_or_else(|| panic!("revocation {id} has no field {name}: {fields:?}"))
                    .clone()
            };
            RevocationEntry {
                handle: field("handle"),
                vp: field("vp"),
                reason: field("reason"),
            }
        })
        .collect()
}

/// Sleeps a little, so that sessions created one after the other have distinct creation
/// times (Redis keeps them in milliseconds).
pub async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}
