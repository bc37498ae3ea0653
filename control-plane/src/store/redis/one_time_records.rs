//! One-time records in Redis: tickets, targets, remembered JWTs, used credentials and
//! OpenID Connect logins in flight, each a key with a TTL.

use std::time::Duration;

use async_trait::async_trait;

use super::replies::corrupt;
use super::{RedisStore, millis};
use crate::domain::{LoginClaim, OidcLogin, Target, Ticket, User};
use crate::store::{OneTimeRecords, StoreError};
use crate::tokens::TokenHash;

#[async_trait]
impl OneTimeRecords for RedisStore {
    async fn put_ticket(
        &self,
        hash: &TokenHash,
        ticket: &Ticket,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.ticket(hash);
        let record =
            serde_json::to_string(&ticket.user).map_err(|error| corrupt(&error.to_string()))?;
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("vp")
            .arg(&ticket.virtual_proxy)
            .arg("rec")
            .arg(record)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl))
            .ignore();
        let mut connection = self.connection.clone();
        self.run(pipeline.query_async::<()>(&mut connection)).await
    }

    async fn take_ticket(
        &self,
        hash: &TokenHash,
        virtual_proxy: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let mut connection = self.connection.clone();
        let record: Option<String> = self
            .run(
                self.scripts
                    .take_ticket
                    .key(self.keys.ticket(hash))
                    .arg(virtual_proxy)
                    .invoke_async(&mut connection),
            )
            .await?;
        record
            .map(|record| {
                let user: User =
                    serde_json::from_str(&record).map_err(|_| corrupt("ticket record"))?;
                Ok(Ticket {
                    virtual_proxy: virtual_proxy.to_owned(),
                    user,
                })
            })
            .transpose()
    }

    async fn put_target(&self, id: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let record = serde_json::to_string(target).map_err(|error| corrupt(&error.to_string()))?;
        self.query(
            redis::cmd("SET")
                .arg(self.keys.target(id))
                .arg(record)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn get_target(&self, id: &str) -> Result<Option<Target>, StoreError> {
        let record: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.target(id)))
            .await?;
        record
            .map(|record| serde_json::from_str(&record).map_err(|_| corrupt("target record")))
            .transpose()
    }

    async fn remember_jwt(&self, hash: &TokenHash, ttl: Duration) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(self.keys.jwt(hash))
                .arg("1")
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn jwt_remembered(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let found: i64 = self
            .query(redis::cmd("EXISTS").arg(self.keys.jwt(hash)))
            .await?;
        Ok(found > 0)
    }

    async fn first_use(&self, hash: &TokenHash, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.keys.used(hash))
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn put_oidc_login(
        &self,
        state_hash: &TokenHash,
        login: &OidcLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let record = serde_json::to_string(login).map_err(|error| corrupt(&error.to_string()))?;
        self.query(
            redis::cmd("SET")
                .arg(self.keys.oidc_login(state_hash))
                .arg(record)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn take_oidc_login(
        &self,
        state_hash: &TokenHash,
    ) -> Result<Option<OidcLogin>, StoreError> {
        let record: Option<String> = self
            .query(redis::cmd("GETDEL").arg(self.keys.oidc_login(state_hash)))
            .await?;
        record
            .map(|record| serde_json::from_str(&record).map_err(|_| corrupt("OpenID login record")))
            .transpose()
    }

    async fn claim_login(
        &self,
        state_hash: &TokenHash,
        binding_hash: &str,
    ) -> Result<LoginClaim, StoreError> {
        let mut connection = self.connection.clone();
        let reply: redis::Value = self
            .run(
                self.scripts
                    .claim_login
                    .key(self.keys.oidc_login(state_hash))
                    .arg(binding_hash)
                    .invoke_async(&mut connection),
            )
            .await?;
        match reply {
            redis::Value::Nil => Ok(LoginClaim::Unknown),
            redis::Value::Int(_) => Ok(LoginClaim::OtherBrowser),
            redis::Value::BulkString(record) => serde_json::from_slice(&record)
                .map(LoginClaim::Taken)
                .map_err(|_| corrupt("login record")),
            _ => Err(corrupt("login claim reply")),
        }
    }
}
