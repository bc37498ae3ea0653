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

/// The bounds of SCAN's COUNT (the page size, within them): what a page leaves of a batch
/// travels in its token, so batches are kept near the page's size.
const MIN_SCAN_COUNT: usize = 10;
const MAX_SCAN_COUNT: usize = 100;

/// The most sessions a page token may carry: a SCAN batch may hold more keys than its COUNT
/// (a bucket's chain comes whole), never this many; a token naming more is not one of ours.
const MAX_PENDING: usize = 10 * MAX_SCAN_COUNT;

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
        let mut scans = 0;
        let mut next_position = Some(position);
        while let Some(mut at) = next_position.take() {
            // The sessions of one batch, and where the listing goes once they are read: the
            // handles a page left over (its token carries them), or one SCAN call's keys.
            let (batch, after) = if !at.pending.is_empty() {
                let batch = std::mem::take(&mut at.pending);
                (batch, at.after_pending())
            } else {
                if scans == MAX_SCANS_PER_PAGE {
                    return Ok(Page {
                        sessions,
                        next_page_token: at.token(),
                    });
                }
                scans += 1;
                let mut scan = redis::cmd("SCAN");
                scan.arg(at.cursor)
                    .arg("MATCH")
                    .arg(self.keys.session_pattern())
                    .arg("COUNT")
                    .arg(page_size.clamp(MIN_SCAN_COUNT, MAX_SCAN_COUNT));
                let master = (!masters.is_empty()).then_some(at.slot);
                let (next, keys): (u64, Vec<String>) =
                    self.run(connection.query_on(master, &scan)).await?;
                let skip = std::mem::take(&mut at.skip);
                let batch: Vec<SessionAddress> = keys
                    .iter()
                    .skip(skip)
                    .filter_map(|key| self.keys.address_of(key))
                    .collect();
                (batch, at.after_batch(next, &masters))
            };
            let read = self.read_sessions_aligned(batch.iter()).await?;
            for (index, stored) in read.into_iter().enumerate() {
                let Some(stored) = stored else { continue };
                if virtual_proxy.is_some_and(|vp| stored.session.virtual_proxy != vp) {
                    continue;
                }
                sessions.push(stored.session);
                if sessions.len() == page_size {
                    // The rest of the batch travels in the token: a SCAN cursor is never
                    // asked twice, since a second answer may hold other keys, or the same
                    // in another order, once Redis has resized its table.
                    let rest = &batch[index + 1..];
                    let resume = if rest.is_empty() {
                        after
                    } else {
                        Some(ListPosition::with_pending(at.slot, after, rest.to_vec()))
                    };
                    return Ok(Page {
                        sessions,
                        next_page_token: resume.map(|p| p.token()).unwrap_or_default(),
                    });
                }
            }
            next_position = after;
        }
        Ok(Page {
            sessions,
            next_page_token: String::new(),
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
/// elsewhere), its SCAN cursor, and the sessions of the last batch that a page had no room
/// for (read before the cursor is). Opaque to clients.
#[derive(Debug, Clone, Default)]
struct ListPosition {
    slot: u16,
    cursor: u64,
    /// The listing is complete once `pending` is read.
    finished: bool,
    pending: Vec<SessionAddress>,
    /// Keys of the cursor's batch already returned, in SCAN's order: tokens issued before
    /// pending sessions travelled in them, accepted so that a listing under way across an
    /// upgrade goes on.
    skip: usize,
}

impl ListPosition {
    /// `pending` first, then `after` (nowhere: the listing is complete).
    fn with_pending(slot: u16, after: Option<Self>, pending: Vec<SessionAddress>) -> Self {
        match after {
            Some(after) => Self { pending, ..after },
            None => Self {
                slot,
                finished: true,
                pending,
                ..Self::default()
            },
        }
    }

    /// Where the listing goes once `pending` is read.
    fn after_pending(&self) -> Option<Self> {
        (!self.finished).then(|| Self {
            pending: Vec::new(),
            ..self.clone()
        })
    }

    fn parse(token: &str) -> Result<Self, StoreError> {
        if token.is_empty() {
            return Ok(Self::default());
        }
        let invalid = |_| StoreError::InvalidPageToken;
        let decoded = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(StoreError::InvalidPageToken)?;
        let parts: Vec<&str> = decoded.split(':').collect();
        let (slot, cursor, rest) = match parts[..] {
            [slot, cursor, rest] => (slot.parse::<u16>().map_err(invalid)?, cursor, rest),
            // Tokens of the single-server listing before Cluster support: `cursor:skip`.
            [cursor, skip] => (0, cursor, skip),
            _ => return Err(StoreError::InvalidPageToken),
        };
        let mut position = Self {
            slot,
            ..Self::default()
        };
        if cursor == FINISHED {
            position.finished = true;
        } else {
            position.cursor = cursor.parse().map_err(invalid)?;
        }
        if let Ok(skip) = rest.parse::<usize>() {
            position.skip = skip;
        } else if !rest.is_empty() {
            // No page leaves more of a batch than SCAN returns for the largest COUNT.
            if rest.split(',').count() > MAX_PENDING {
                return Err(StoreError::InvalidPageToken);
            }
            position.pending = rest
                .split(',')
                .map(|handle| {
                    SessionAddress::from_handle(handle).ok_or(StoreError::InvalidPageToken)
                })
                .collect::<Result<_, _>>()?;
        }
        if position.finished && position.pending.is_empty() {
            return Err(StoreError::InvalidPageToken);
        }
        Ok(position)
    }

    /// Where to go once this position's whole batch was read and SCAN answered `next`: on in
    /// this master, on to the next of `masters` (ascending; empty outside a Cluster), or
    /// nowhere (the listing is complete).
    fn after_batch(&self, next: u64, masters: &[u16]) -> Option<Self> {
        if next != 0 {
            return Some(Self {
                slot: self.slot,
                cursor: next,
                ..Self::default()
            });
        }
        masters
            .iter()
            .find(|&&slot| slot > self.slot)
            .map(|&slot| Self {
                slot,
                ..Self::default()
            })
    }

    fn token(&self) -> String {
        let cursor = if self.finished {
            FINISHED.to_owned()
        } else {
            self.cursor.to_string()
        };
        let rest = if self.pending.is_empty() {
            self.skip.to_string()
        } else {
            let handles: Vec<String> = self.pending.iter().map(SessionAddress::handle).collect();
            handles.join(",")
        };
        URL_SAFE_NO_PAD.encode(format!("{}:{cursor}:{rest}", self.slot))
    }
}

/// The cursor of a token whose listing is complete once its pending sessions are read.
const FINISHED: &str = "end";

#[cfg(test)]
mod tests {
    use super::*;

    fn address(handle: &str) -> SessionAddress {
        SessionAddress::from_handle(handle).expect("a handle this store issues")
    }

    #[test]
    fn a_page_token_carries_the_sessions_a_page_had_no_room_for() {
        let pending = vec![
            address("AAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"),
            address("CCCCCCCCCCCCCCCC.DDDDDDDDDDDDDDDDDDDDDD"),
        ];
        let after = ListPosition {
            slot: 5461,
            cursor: 17,
            ..ListPosition::default()
        };
        let position = ListPosition::with_pending(5461, Some(after), pending.clone());
        let resumed = ListPosition::parse(&position.token()).expect("its own token");
        assert_eq!((resumed.slot, resumed.cursor), (5461, 17));
        assert_eq!(resumed.pending, pending);
        let then = resumed.after_pending().expect("the cursor after them");
        assert_eq!((then.slot, then.cursor, then.pending.len()), (5461, 17, 0));

        let last = ListPosition::with_pending(0, None, pending.clone());
        let resumed = ListPosition::parse(&last.token()).expect("its own token");
        assert_eq!(resumed.pending, pending);
        assert!(
            resumed.after_pending().is_none(),
            "the listing ends with them"
        );
    }

    #[test]
    fn tokens_of_earlier_versions_still_resume() {
        let legacy =
            ListPosition::parse(&URL_SAFE_NO_PAD.encode("0:42:3")).expect("slot:cursor:skip");
        assert_eq!((legacy.slot, legacy.cursor, legacy.skip), (0, 42, 3));
        let single = ListPosition::parse(&URL_SAFE_NO_PAD.encode("42:3")).expect("cursor:skip");
        assert_eq!((single.slot, single.cursor, single.skip), (0, 42, 3));
    }

    #[test]
    fn a_token_that_names_no_session_is_refused() {
        for text in [
            "0:1:not-a-handle",
            "0:1:a:b",
            "x:1:0",
            "0",
            "70000:1:0",
            "0:end:0",
            "0:-1:0",
        ] {
            assert!(
                matches!(
                    ListPosition::parse(&URL_SAFE_NO_PAD.encode(text)),
                    Err(StoreError::InvalidPageToken)
                ),
                "{text}"
            );
        }
        assert!(matches!(
            ListPosition::parse("%%%"),
            Err(StoreError::InvalidPageToken)
        ));
        let handle = "AAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB";
        let flood = vec![handle; MAX_PENDING + 1].join(",");
        assert!(matches!(
            ListPosition::parse(&URL_SAFE_NO_PAD.encode(format!("0:1:{flood}"))),
            Err(StoreError::InvalidPageToken)
        ));
    }
}
