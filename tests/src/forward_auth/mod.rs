//! Forward authentication: a node as the authorizer behind a real ingress (nginx
//! `auth_request`, Caddy `forward_auth`) and behind Envoy's `ext_authz`, what its
//! forward-auth endpoint answers to checks that describe no acceptable request, and checks
//! of public paths.

mod caddy;
mod endpoint;
mod examples;
mod ext_authz;
mod fast_http1;
mod nginx;
mod public_paths;
mod signed_assertion;

use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::ingress::Ingress;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer};

/// Node settings: the forward-auth and ext_authz listeners on ephemeral ports, trusting the ingresses on
/// 127.0.0.1 (and nobody else: 127.0.0.2 is another network).
pub const FORWARD_AUTH: &str = "[forward_auth]\nlisten = \"127.0.0.1:0\"\n\
     grpc_listen = \"127.0.0.1:0\"\ntrusted_networks = [\"127.0.0.1/32\"]\n";

/// A control plane on Redis with virtual proxy "app" (its `/admin` denied by rule), two
/// nodes with forward authentication on, and the upstream the ingresses forward to.
pub struct Authorizers {
    pub redis: RedisServer,
    pub upstream: EchoUpstream,
    pub control_plane: ControlPlane,
    pub one: DataPlaneNode,
    pub two: DataPlaneNode,
}

impl Authorizers {
    /// The session cookie (`name=value`) of a session of alice (directory CORP) on the proxy.
    pub async fn alice_session(&self) -> String {
        let (cookie, _) =
            session_cookie(&self.control_plane, "app", COOKIE, user("CORP", "alice")).await;
        cookie
    }

    /// nginx `auth_request` asking node one, in front of the upstream; `None` (skipped)
    /// without nginx outside CI.
    pub async fn nginx_in_front_of_one(&self) -> Option<Ingress> {
        Ingress::nginx(self.one.forward_auth_address(), &self.upstream.node()).await
    }

    /// Caddy `forward_auth` asking node one, in front of the upstream, as above.
    pub async fn caddy_in_front_of_one(&self) -> Option<Ingress> {
        Ingress::caddy(self.one.forward_auth_address(), &self.upstream.node()).await
    }

    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`start`](Self::start), with more sub-tables of "app" (`tables`) after its rule.
    pub async fn start_with(tables: &[&str]) -> Self {
        let redis = RedisServer::start().await;
        let upstream = EchoUpstream::start("engine").await;
        let mut proxy = AppProxy::new([upstream.node()])
            .table("[[virtual_proxies.access_rules]]\npath_prefix = \"/admin\"\naction = \"deny\"");
        for table in tables {
            proxy = proxy.table(table);
        }
        let control_plane = ControlPlane::start(&proxy.on_redis(&redis)).await;
        let one = DataPlaneNode::start_with(&control_plane, FORWARD_AUTH).await;
        let two = DataPlaneNode::start_with(&control_plane, FORWARD_AUTH).await;
        Self {
            redis,
            upstream,
            control_plane,
            one,
            two,
        }
    }
}
