//! Tickets and login targets: issuing a ticket for a user, redeeming it for a session once
//! at the issuing virtual proxy, and remembering where a browser returns after login.

use std::time::SystemTime;

use gatehouse_proto::origin;
use tonic::codegen::http::Uri;

use super::{Authority, IssuedSession};
use crate::audit::Method;
use crate::domain::{ClientInfo, Target, Ticket, User};
use crate::error::Error;
use crate::tokens::{self, TokenHash};

/// A ticket just issued. Its text exists only here and in the answer to the caller.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    pub ticket: String,
    pub target_uri: Option<String>,
    pub user: User,
    pub expires: SystemTime,
}

impl Authority {
    pub async fn request_ticket(
        &self,
        virtual_proxy: &str,
        user: User,
        target_id: Option<&str>,
    ) -> Result<IssuedTicket, Error> {
        let proxies = self.virtual_proxies();
        let proxy = proxies.get(virtual_proxy)?;
        // An unknown target id still gets a ticket, only without a URI, as in QPS, unless the
        // proxy names a default landing. A target recorded before the origins were narrowed
        // (or by an older node) is checked again.
        let known_target = match target_id.filter(|id| is_plausible_id(id)) {
            Some(id) => self
                .store
                .get_target(&tokens::canonical_guid(id))
                .await?
                .filter(|target| target.virtual_proxy == virtual_proxy)
                .map(|target| target.uri)
                .filter(|uri| {
                    origin::url_is_admitted(uri, &proxy.public_origins, &proxy.host_allow_list)
                }),
            None => None,
        };
        let target_uri = known_target.or_else(|| proxy.default_target_uri.clone());
        let ticket = tokens::new_ticket();
        self.store
            .put_ticket(
                &TokenHash::of(&ticket),
                &Ticket {
                    virtual_proxy: virtual_proxy.to_owned(),
                    user: user.clone(),
                },
                self.tickets.ticket_ttl,
            )
            .await?;
        Ok(IssuedTicket {
            ticket,
            target_uri,
            user,
            expires: self.clock.now() + self.tickets.ticket_ttl,
        })
    }

    /// Turns a ticket into a session. Single use, and only at the issuing virtual proxy.
    /// The outcome is audited (never the ticket itself).
    pub async fn redeem_ticket(
        &self,
        virtual_proxy: &str,
        ticket: &str,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        let outcome = self
            .ticket_session(virtual_proxy, ticket, client.clone())
            .await;
        self.audit_login(
            Method::Ticket,
            virtual_proxy,
            None,
            &client,
            outcome.as_ref(),
        );
        outcome
    }

    async fn ticket_session(
        &self,
        virtual_proxy: &str,
        ticket: &str,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        self.virtual_proxies().get(virtual_proxy)?;
        if ticket.is_empty() || ticket.len() > 256 {
            return Err(Error::invalid("ticket must be 1 to 256 characters long"));
        }
        let ticket = self
            .store
            .take_ticket(&TokenHash::of(ticket), virtual_proxy)
            .await?
            // One message for every case, so the answer reveals nothing about the ticket.
            .ok_or_else(|| {
                Error::NotFound(
                    "ticket is unknown, expired, already used or for another virtual proxy".into(),
                )
            })?;
        self.start_session(
            virtual_proxy,
            ticket.user,
            tokens::new_session_token(),
            client,
        )
        .await
    }

    pub async fn create_target(
        &self,
        virtual_proxy: &str,
        uri: &str,
    ) -> Result<(String, SystemTime), Error> {
        let proxies = self.virtual_proxies();
        let proxy = proxies.get(virtual_proxy)?;
        check_target_uri(uri, self.tickets.max_target_bytes)?;
        // A target on a host an attacker names would receive the victim's ticket.
        if !origin::url_is_admitted(uri, &proxy.public_origins, &proxy.host_allow_list) {
            return Err(Error::invalid(
                "target_uri is not on a public origin or allowed host of this virtual proxy",
            ));
        }
        let id = tokens::new_guid();
        let target = Target {
            virtual_proxy: virtual_proxy.to_owned(),
            uri: uri.to_owned(),
        };
        self.store
            .put_target(&id, &target, self.tickets.target_ttl)
            .await?;
        Ok((id, self.clock.now() + self.tickets.target_ttl))
    }
}

fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A target is where a browser is sent back after login: an absolute http(s) URL of at most
/// `max_bytes` (`tickets.max_target_bytes`).
fn check_target_uri(uri: &str, max_bytes: usize) -> Result<(), Error> {
    if uri.len() > max_bytes {
        return Err(Error::invalid(format!(
            "target_uri is longer than {max_bytes} bytes"
        )));
    }
    let parsed: Uri = uri
        .parse()
        .map_err(|_| Error::invalid("target_uri is not a valid URI"))?;
    let http = matches!(parsed.scheme_str(), Some(scheme) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"));
    if !http || parsed.host().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "target_uri must be an absolute http or https URL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uris_must_be_absolute_http() {
        assert!(check_target_uri("https://portal.example.com/sense/app/1?x=1", 4096).is_ok());
        assert!(check_target_uri("HTTP://h/", 4096).is_ok());
        for bad in [
            "/relative",
            "javascript:alert(1)",
            "ftp://h/",
            "https://",
            "not a uri",
        ] {
            assert!(check_target_uri(bad, 4096).is_err(), "{bad}");
        }
        assert!(check_target_uri(&format!("https://h/{}", "a".repeat(5000)), 4096).is_err());
        let at_cap = format!("https://h/{}", "a".repeat(246));
        assert!(check_target_uri(&at_cap, 256).is_ok());
        let over = check_target_uri(&format!("{at_cap}a"), 256).unwrap_err();
        assert!(over.to_string().contains("longer than 256 bytes"), "{over}");
    }
}
