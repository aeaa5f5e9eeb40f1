//! The Idempotency-Keys this replica completed, remembered for a while so that their replays are
//! cheap: answered from memory — no database, no upstream, no write permit — even while the
//! write limit is full and new orders are shed (a client retrying a completed order in a retry
//! storm gets its answer, not a 503). A key completed by another replica, or before a restart,
//! is not here: its replay takes the normal path (a write permit and one claim query).
//!
//! Correct because a completed key's answer never changes until the database forgets the key,
//! and an entry goes first: it lives at most `retention − longest_order` after the order was
//! placed (the key's retention runs from its claim, at most `longest_order` earlier), and never
//! more than [`MAX_TTL`]. Bounded: two generations of [`GENERATION`] entries; when the young one
//! is full, the old one is dropped whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::IdempotencyConfig;
use crate::domain::idempotency::{IdempotencyKey, StoredResponse};

/// Entries per generation: at most twice this many kept (≈ 500 bytes each: 4 MiB).
const GENERATION: usize = 4096;
/// The longest an entry is kept, however long keys are retained.
const MAX_TTL: Duration = Duration::from_secs(600);

/// One completed key: what its first request was (its fingerprint) and what it was answered.
#[derive(Debug)]
pub struct CompletedKey {
    pub fingerprint: String,
    pub response: StoredResponse,
    expires: Instant,
}

/// A request whose key is remembered here, found before the write limit was asked: it is
/// answered from this, with no permit (set by `admission::shed`, read by the order handler).
#[derive(Debug, Clone)]
pub struct Replay(pub Arc<CompletedKey>);

/// See the module doc; cheap to clone (one shared memory).
#[derive(Debug, Clone)]
pub struct CompletedKeys {
    generations: Arc<Mutex<Generations>>,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<String, Arc<CompletedKey>>,
    old: HashMap<String, Arc<CompletedKey>>,
}

impl CompletedKeys {
    pub fn new(keys: &IdempotencyConfig) -> Self {
        let ttl = keys.retention.saturating_sub(keys.longest_order).min(MAX_TTL);
        Self { generations: Arc::default(), ttl }
    }

    /// The completed key, if this replica placed its order and still remembers it.
    pub fn get(&self, key: &str) -> Option<Arc<CompletedKey>> {
        let generations = self.generations.lock().unwrap_or_else(PoisonError::into_inner);
        let found = generations.young.get(key).or_else(|| generations.old.get(key))?;
        (found.expires > Instant::now()).then(|| Arc::clone(found))
    }

    /// Remembers a key whose order was just placed and stored with it.
    pub fn remember(&self, key: &IdempotencyKey, fingerprint: String, response: StoredResponse) {
        if self.ttl.is_zero() {
            return;
        }
        let entry = Arc::new(CompletedKey { fingerprint, response, expires: Instant::now() + self.ttl });
        let mut generations = self.generations.lock().unwrap_or_else(PoisonError::into_inner);
        if generations.young.len() >= GENERATION {
            generations.old = std::mem::take(&mut generations.young);
        }
        generations.young.insert(key.as_str().to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn keys(retention: Duration) -> CompletedKeys {
        let config =
            IdempotencyConfig { lease: Duration::from_secs(30), retention, longest_order: Duration::from_secs(3) };
        CompletedKeys::new(&config)
    }

    fn remember(keys: &CompletedKeys, key: &str) {
        let response = StoredResponse { status: 201, order_id: Uuid::nil(), body: format!("{{\"key\":\"{key}\"}}") };
        keys.remember(&IdempotencyKey::parse(key).expect("key"), format!("fp-{key}"), response);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_key_is_found_until_before_the_database_forgets_it() {
        let keys = keys(Duration::from_secs(60));
        remember(&keys, "k1");
        let found = keys.get("k1").expect("remembered");
        assert_eq!((found.fingerprint.as_str(), found.response.body.as_str()), ("fp-k1", "{\"key\":\"k1\"}"));
        assert!(keys.get("k2").is_none());
        tokio::time::advance(Duration::from_secs(56)).await;
        assert!(keys.get("k1").is_some(), "retention 60 s − longest order 3 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(keys.get("k1").is_none(), "gone before the database's 60 s from the claim");
    }

    #[tokio::test(start_paused = true)]
    async fn never_kept_past_ten_minutes_and_not_at_all_when_retention_is_shorter_than_an_order() {
        let long = keys(Duration::from_secs(86_400));
        remember(&long, "k");
        tokio::time::advance(MAX_TTL).await;
        assert!(long.get("k").is_none());
        let short = keys(Duration::from_secs(2));
        remember(&short, "k");
        assert!(short.get("k").is_none());
    }

    #[tokio::test]
    async fn at_most_two_generations_are_kept() {
        let keys = keys(Duration::from_secs(86_400));
        for i in 0..=2 * GENERATION {
            remember(&keys, &format!("k{i}"));
        }
        assert!(keys.get("k0").is_none(), "the oldest generation was dropped");
        assert!(keys.get(&format!("k{GENERATION}")).is_some());
        assert!(keys.get(&format!("k{}", 2 * GENERATION)).is_some());
        let generations = keys.generations.lock().expect("lock");
        assert!(generations.young.len() + generations.old.len() <= 2 * GENERATION);
    }
}
