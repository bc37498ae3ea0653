//! Reading sessions spread over Cluster masters and slots: the paged SCAN listing, which
//! walks the masters one after the other, and batched reads of sessions by address.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::RedisStore;
use super::keys::SessionAddress;
use super::replies::{StoredSession, stored_session};
use crate::domain::Page;
use crate::store::{MAX_PAGE_SIZE, StoreError};

/// How many SCAN calls one listing page may make before it returns what it has.
const MAX_SCANS_PER_PAGE: usize = 64;

impl RedisStore {
    /// One page of sessions, scanning each Cluster master in turn.
    pub(super) async fn list_page(
        &self,
        virtual_proxy: Option<&str>,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, StoreError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        // A Cluster's keys are spread over its masters: the listing scans them one after the
        // other. Elsewhere one SCAN sees every key.
        let mut connection = self.connection.clone();
        let masters = self.run(connection.masters()).await?;
        let mut position = ListPosition::parse(page_token)?;
        if page_token.is_empty()
            && let Some(&first) = masters.first()
        {
            position.slot = first;
        }
        if !masters.is_empty() && !masters.contains(&position.slot) {
            // Not a master this listing scans (or the cluster was resharded meanwhile).
            return Err(StoreError::InvalidPageToken);
        }
        let mut sessions = Vec::new();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let mut scan = redis::cmd("SCAN");
            scan.arg(position.cursor)
                .arg("MATCH")
                .arg(self.keys.session_pattern())
                .arg("COUNT")
                .arg(page_size.max(100));
            let master = (!masters.is_empty()).then_some(position.slot);
            let (next, keys): (u64, Vec<String>) =
                self.run(connection.query_on(master, &scan)).await?;
            let found: Vec<(usize, SessionAddress)> = keys
                .iter()
                .enumerate()
                .skip(position.skip)
                .filter_map(|(offset, key)| Some((offset, self.keys.address_of(key)?)))
                .collect();
            let read = self
                .read_sessions_aligned(found.iter().map(|(_, address)| address))
                .await?;
            for ((offset, _), stored) in found.iter().zip(read) {
                let Some(stored) = stored else { continue };
                if virtual_proxy.is_some_and(|vp| stored.session.virtual_proxy != vp) {
                    continue;
                }
                sessions.push(stored.session);
                if sessions.len() == page_size {
                    let consumed = offset + 1;
                    let resume = if consumed < keys.len() {
                        Some(ListPosition {
                            skip: consumed,
                            ..position
                        })
                    } else {
                        position.after_batch(next, &masters)
                    };
                    return Ok(Page {
                        sessions,
                        next_page_token: resume.map(|p| p.token()).unwrap_or_default(),
                    });
                }
            }
            match position.after_batch(next, &masters) {
                Some(next_position) => position = next_position,
                None => {
                    return Ok(Page {
                        sessions,
                        next_page_token: String::new(),
                    });
                }
            }
        }
        Ok(Page {
            sessions,
            next_page_token: position.token(),
        })
    }

    /// Reads several sessions in one round trip, skipping those that no longer exist.
    pub(super) async fn read_sessions(
        &self,
        addresses: &[SessionAddress],
    ) -> Result<Vec<StoredSession>, StoreError> {
        Ok(self
            .read_sessions_aligned(addresses.iter())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Reads several sessions in one round trip; `None` where a session no longer exists.
    async fn read_sessions_aligned<'a>(
        &self,
        addresses: impl ExactSizeIterator<Item = &'a SessionAddress> + Clone,
    ) -> Result<Vec<Option<StoredSession>>, StoreError> {
        if addresses.len() == 0 {
            return Ok(Vec::new());
        }
        // One command per session, not a pipeline: the sessions may live in other slots (other
        // Cluster nodes). On one connection the commands still travel together.
        let all: Vec<HashMap<String, String>> =
            futures_util::future::try_join_all(addresses.clone().map(|address| {
                let command = redis::cmd("HGETALL")
                    .arg(self.keys.session(address))
                    .clone();
                async move { self.query::<HashMap<String, String>>(&command).await }
            }))
            .await?;
        addresses
            .zip(all)
            .map(|(address, fields)| {
                if fields.is_empty() {
                    Ok(None)
                } else {
                    stored_session(address, &fields).map(Some)
                }
            })
            .collect()
    }
}

/// Where a listing resumes: which Cluster master (named by its lowest slot; always 0
/// elsewhere), its SCAN cursor, and how many keys of that cursor's batch were already
/// returned. Opaque to clients.
#[derive(Debug, Clone, Copy)]
struct ListPosition {
    slot: u16,
    cursor: u64,
    skip: usize,
}

impl ListPosition {
    fn parse(token: &str) -> Result<Self, StoreError> {
        if token.is_empty() {
            return Ok(Self {
                slot: 0,
                cursor: 0,
                skip: 0,
            });
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(StoreError::InvalidPageToken)?;
        let numbers = decoded
            .split(':')
            .map(|part| {
                part.parse::<u64>()
                    .map_err(|_| StoreError::InvalidPageToken)
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let (slot, cursor, skip) = match numbers[..] {
            [slot, cursor, skip] => (slot, cursor, skip),
            // Tokens of the single-server listing before Cluster support: `cursor:skip`.
            [cursor, skip] => (0, cursor, skip),
            _ => return Err(StoreError::InvalidPageToken),
        };
        Ok(Self {
            slot: u16::try_from(slot).map_err(|_| StoreError::InvalidPageToken)?,
            cursor,
            skip: usize::try_from(skip).map_err(|_| StoreError::InvalidPageToken)?,
        })
    }

    /// Where to go once this position's whole batch was read and SCAN answered `next`: on in
    /// this master, on to the next of `masters` (ascending; empty outside a Cluster), or
    /// nowhere (the listing is complete).
    fn after_batch(self, next: u64, masters: &[u16]) -> Option<Self> {
        if next != 0 {
            return Some(Self {
                cursor: next,
                skip: 0,
                ..self
            });
        }
        masters
            .iter()
            .find(|&&slot| slot > self.slot)
            .map(|&slot| Self {
                slot,
                cursor: 0,
                skip: 0,
            })
    }

    fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", self.slot, self.cursor, self.skip))
    }
}
