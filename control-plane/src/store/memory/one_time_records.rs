//! One-time records in memory: tickets, targets, remembered JWTs, used credentials and
//! OpenID Connect logins in flight, each with its expiry.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::{LoginClaim, OidcLogin, Target, Ticket};
use crate::store::{OneTimeRecords, StoreError};
use crate::tokens::TokenHash;

#[async_trait]
impl OneTimeRecords for MemoryStore {
    async fn put_ticket(
        &self,
        hash: &TokenHash,
        ticket: &Ticket,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .tickets
            .insert(hash.clone(), (ticket.clone(), now + ttl));
        Ok(())
    }

    async fn take_ticket(
        &self,
        hash: &TokenHash,
        virtual_proxy: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let (mut state, now) = self.state();
        let usable = matches!(
            state.tickets.get(hash),
            Some((ticket, expires)) if *expires > now && ticket.virtual_proxy == virtual_proxy
        );
        Ok(if usable {
            state.tickets.remove(hash).map(|(ticket, _)| ticket)
        } else {
            None
        })
    }

    async fn put_target(&self, id: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .targets
            .insert(id.to_owned(), (target.clone(), now + ttl));
        Ok(())
    }

    async fn get_target(&self, id: &str) -> Result<Option<Target>, StoreError> {
        let (state, now) = self.state();
        Ok(state
            .targets
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(target, _)| target.clone()))
    }

    async fn remember_jwt(&self, hash: &TokenHash, ttl: Duration) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state.jwts.insert(hash.clone(), now + ttl);
        Ok(())
    }

    async fn jwt_remembered(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let (state, now) = self.state();
        Ok(state.jwts.get(hash).is_some_and(|expires| *expires > now))
    }

    async fn first_use(&self, hash: &TokenHash, ttl: Duration) -> Result<bool, StoreError> {
        let (mut state, now) = self.state();
        if state.used.get(hash).is_some_and(|expires| *expires > now) {
            return Ok(false);
        }
        state.used.insert(hash.clone(), now + ttl);
        Ok(true)
    }

    async fn put_oidc_login(
        &self,
        state_hash: &TokenHash,
        login: &OidcLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .oidc_logins
            .insert(state_hash.clone(), (login.clone(), now + ttl));
        Ok(())
    }

    async fn take_oidc_login(
        &self,
        state_hash: &TokenHash,
    ) -> Result<Option<OidcLogin>, StoreError> {
        let (mut state, now) = self.state();
        Ok(state
            .oidc_logins
            .remove(state_hash)
            .filter(|(_, expires)| *expires > now)
            .map(|(login, _)| login))
    }

    async fn claim_login(
        &self,
        state_hash: &TokenHash,
        binding_hash: &str,
    ) -> Result<LoginClaim, StoreError> {
        let (mut state, now) = self.state();
        let Some((login, expires)) = state.oidc_logins.get(state_hash) else {
            return Ok(LoginClaim::Unknown);
        };
        if *expires <= now {
            state.oidc_logins.remove(state_hash);
            return Ok(LoginClaim::Unknown);
        }
        if login.binding_hash != binding_hash {
            return Ok(LoginClaim::OtherBrowser);
        }
        Ok(state
            .oidc_logins
            .remove(state_hash)
            .map_or(LoginClaim::Unknown, |(login, _)| LoginClaim::Taken(login)))
    }
}
