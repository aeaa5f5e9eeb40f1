//! Idempotency keys (IETF httpapi `Idempotency-Key` draft): a client that retries an order with
//! the same key gets the first order's response again instead of a second order.
//!
//! The contract, enforced by the store in one place:
//! - the first request with a key *leases* it (`in flight`), places the order, and commits the
//!   response with the order and its outbox row in **one transaction**, so a key is completed
//!   exactly when an order exists for it;
//! - a request that fails (any 4xx/5xx: no order was created) releases the key, so the client's
//!   retry with the same key runs again — caching a 503 would make fail-fast retries useless;
//! - a lease outlives the longest an order can take; a lease left by a crashed process expires
//!   and the next request with that key takes it over (the crashed one never committed);
//! - completed keys are kept for the retention period, then forgotten and purged.
//!
//! Keys are global (there are no client identities here): clients should use UUIDs.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Longest key accepted (the draft sets no bound; UUIDs and ULIDs need 36).
pub const MAX_KEY_LEN: usize = 255;

/// Why an `Idempotency-Key` header was refused; `Display` is the client-facing reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("may contain only letters, digits and - _ . : + / =")]
    BadCharacter,
    #[error("must be sent once")]
    Repeated,
}

/// A validated key. The draft defines the header as a structured-field string (`"…"`);
/// bare tokens are accepted too, since most clients send them unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
        let key = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
        if key.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidKey::TooLong);
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b);
        if !key.bytes().all(allowed) {
            return Err(InvalidKey::BadCharacter);
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key's first request asked for, in a canonical form: the same order sent with other
/// whitespace or field order is the same request; another user or product is not.
pub fn fingerprint(user_id: &str, product_code: &str) -> String {
    serde_json::json!({ "product_code": product_code, "user_id": user_id }).to_string()
}

/// The instants a lease is taken with; passed in so tests control the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimes {
    pub now: DateTime<Utc>,
    /// An unfinished lease may be taken over after this.
    pub lease_until: DateTime<Utc>,
    /// The key (and its response) is forgotten after this.
    pub expires_at: DateTime<Utc>,
}

/// Deletes forgotten idempotency keys every `every`, for as long as the task lives. Claims
/// already ignore forgotten keys, so this only reclaims space; a failed pass waits for the next.
pub async fn purge_forever(store: std::sync::Arc<dyn super::store::OrderStore>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.purge_keys(Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "forgotten idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "could not purge forgotten idempotency keys"),
        }
    }
}

/// How long keys are held and kept; read by `config`, given meaning here.
pub use crate::config::IdempotencyConfig as KeySettings;

impl KeySettings {
    pub fn times(&self, now: DateTime<Utc>) -> KeyTimes {
        let after = |d: Duration| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        KeyTimes { now, lease_until: after(self.lease), expires_at: after(self.retention) }
    }

    /// How long a request that found `held` in flight should wait before retrying: until the
    /// holder's order must be done when the lease is young enough to be a live request's,
    /// else (a crash left it) until the lease runs out; never past the lease's end. The caller
    /// rounds up and waits at least a second.
    pub fn retry_after(&self, held: HeldLease, now: DateTime<Utc>) -> Duration {
        let to_std = |d: chrono::Duration| d.to_std().unwrap_or(Duration::ZERO);
        let lease_left = to_std(held.until - now);
        let age = to_std(now - held.since);
        match self.longest_order.checked_sub(age) {
            Some(order_left) if !order_left.is_zero() => order_left.min(lease_left),
            _ => lease_left,
        }
    }
}

/// When the request holding a key leased it, and until when the lease holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// A response kept with a completed key and replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub order_id: Uuid,
    /// The exact JSON body first sent.
    pub body: String,
}

/// What the store found when a request tried to lease a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// This request holds the key; it must complete it with the order or release it.
    Leased(KeyLease),
    /// Another request holds the key and has not finished: try again later (409).
    InFlight { same_request: bool, held: HeldLease },
    /// The key was completed by a request with this fingerprint.
    Completed { same_request: bool, response: StoredResponse },
}

/// Proof of holding a key: completion and release only succeed with the same token, so a
/// request whose lease was taken over can never complete the key a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLease {
    pub key: IdempotencyKey,
    pub token: Uuid,
}

/// The key completion committed with an order: the lease and the response to replay.
#[derive(Debug, Clone)]
pub struct KeyCompletion {
    pub lease: KeyLease,
    pub status: u16,
    pub body: String,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn quoted_and_bare_keys_are_the_same_key() {
        let bare = IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324");
        let quoted = IdempotencyKey::parse("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"");
        assert_eq!(bare, quoted);
        assert_eq!(bare.map(|k| k.0.len()), Ok(36));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert_eq!(IdempotencyKey::parse(""), Err(InvalidKey::Empty));
        assert_eq!(IdempotencyKey::parse("\"\""), Err(InvalidKey::Empty));
        assert_eq!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN + 1)), Err(InvalidKey::TooLong));
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        for bad in ["a b", "a\"b", "é", "a;b", "a,b", "\"abc", "a\\b"] {
            assert_eq!(IdempotencyKey::parse(bad), Err(InvalidKey::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn a_young_lease_waits_for_its_order_an_orphan_for_its_lease() {
        let settings = KeySettings {
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            longest_order: Duration::from_secs(3),
        };
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let held = HeldLease { since: t0, until: at(30_000) };
        let wait = |now_ms: i64| settings.retry_after(held, at(now_ms));
        assert_eq!(wait(0), Duration::from_secs(3), "just leased: the longest order");
        assert_eq!(wait(2_500), Duration::from_millis(500), "the live order is nearly done");
        assert_eq!(wait(3_000), Duration::from_secs(27), "past any order: a crash left it");
        assert_eq!(wait(10_000), Duration::from_secs(20));
        assert_eq!(wait(31_000), Duration::ZERO, "expired: the next claim takes it over");
        let short = HeldLease { since: t0, until: at(1_000) };
        assert_eq!(settings.retry_after(short, t0), Duration::from_secs(1), "never past the lease");
    }

    #[test]
    fn fingerprints_differ_exactly_when_the_order_differs() {
        assert_eq!(fingerprint("u1", "p1"), fingerprint("u1", "p1"));
        assert_ne!(fingerprint("u1", "p1"), fingerprint("u1", "p2"));
        assert_ne!(fingerprint("u1", "p1"), fingerprint("p1", "u1"));
    }

    proptest! {
        #[test]
        fn accepted_keys_are_bounded_printable_ascii(raw in "\\PC{0,300}") {
            if let Ok(key) = IdempotencyKey::parse(&raw) {
                prop_assert!(!key.as_str().is_empty() && key.as_str().len() <= MAX_KEY_LEN);
                prop_assert!(key.as_str().bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
            }
        }

        #[test]
        fn every_key_of_the_charset_round_trips(key in "[A-Za-z0-9_.:+/=-]{1,255}") {
            prop_assert_eq!(IdempotencyKey::parse(&key).map(|k| k.0), Ok(key.clone()));
            prop_assert_eq!(IdempotencyKey::parse(&format!("\"{key}\"")).map(|k| k.0), Ok(key));
        }
    }
}
