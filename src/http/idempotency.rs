//! `Idempotency-Key` on `POST /v1/orders`: the header, and placing an order at most once per
//! key. The rules (lease, completion in the order's transaction, release on failure,
//! retention) are in [`crate::domain::idempotency`]; this is their HTTP side.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use chrono::Utc;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::replays::CompletedKey;
use crate::domain::OrderStore;
use crate::domain::idempotency::{IdempotencyKey, InvalidKey, KeyClaim, KeyCompletion, KeyLease, StoredResponse};
use crate::domain::place_order::CompleteKey;
use crate::domain::{Order, ProductCode, UserId, idempotency};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on a response replayed from an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's key, if it sent one; a malformed or repeated header is a 400.
pub fn key_from(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refuse = |why: InvalidKey| ApiError::MalformedRequest(format!("Idempotency-Key {why}"));
    if values.next().is_some() {
        return Err(refuse(InvalidKey::Repeated));
    }
    let raw = value.to_str().map_err(|_| refuse(InvalidKey::BadCharacter))?;
    IdempotencyKey::parse(raw).map(Some).map_err(refuse)
}

/// How a keyed request ended when it did not fail.
pub enum Placed {
    New(Order),
    Replayed(StoredResponse),
}

/// Places the order unless this key already did (replay) or is doing so (409); a key first
/// used for another order is a 422. `render` is the 201 body, stored with the key.
pub async fn place_once(
    app: &AppState,
    key: IdempotencyKey,
    user_id: &UserId,
    product_code: &ProductCode,
    render: impl Fn(&Order) -> String + Send + Sync,
) -> Result<Placed, ApiError> {
    let fingerprint = idempotency::fingerprint(user_id.as_str(), product_code.as_str());
    let lease = KeyLease { key, token: Uuid::now_v7() };
    // Armed before the claim: a claim committed by the database whose answer was lost (the
    // connection died) must be released too, or the key would stay leased with no owner.
    let guard = ReleaseOnDrop { store: Arc::clone(&app.store), lease: Some(lease.clone()), give_up: app.keys.lease };
    let claim = app.store.claim_key(&lease, &fingerprint, app.keys.times(Utc::now())).await?;
    let refused = match claim {
        KeyClaim::Leased(_) => None,
        KeyClaim::Completed { same_request: true, response } => Some(Ok(Placed::Replayed(response))),
        KeyClaim::Completed { same_request: false, .. } | KeyClaim::InFlight { same_request: false, .. } => {
            Some(Err(ApiError::KeyReused))
        }
        KeyClaim::InFlight { same_request: true, held } => {
            Some(Err(ApiError::KeyInFlight { retry_after: app.keys.retry_after(held, Utc::now()) }))
        }
    };
    if let Some(answer) = refused {
        guard.disarm(); // the key is someone else's: this request wrote nothing
        return answer;
    }
    let complete: &CompleteKey<'_> =
        &|order: &Order| KeyCompletion { lease: lease.clone(), status: 201, body: render(order) };
    let placed = app.orders.place_order(user_id, product_code, Some(complete)).await;
    if let Ok(order) = &placed {
        guard.disarm();
        let response = StoredResponse { status: 201, order_id: order.id, body: render(order) };
        app.replays.remember(&lease.key, fingerprint, response);
    }
    Ok(Placed::New(placed?))
}

/// A keyed request whose key this replica completed ([`crate::http::replays`]): the same order
/// replays the stored answer, another order is a 422 — what the database would have said.
pub fn replay_from_memory(
    completed: &CompletedKey,
    user_id: &UserId,
    product_code: &ProductCode,
) -> Result<Placed, ApiError> {
    if idempotency::fingerprint(user_id.as_str(), product_code.as_str()) == completed.fingerprint {
        Ok(Placed::Replayed(completed.response.clone()))
    } else {
        Err(ApiError::KeyReused)
    }
}

/// Releases the key unless disarmed: on failure, and also when the client goes away and the
/// handler is dropped mid-order, so the client's retry need not wait for the lease to expire.
/// Releasing a key that was completed meanwhile does nothing (see `release_key`). When the
/// database is what failed, the release is retried (capped backoff) until it succeeds or the
/// lease has expired by itself — else every retry of that order would get 409 until then.
struct ReleaseOnDrop {
    store: Arc<dyn OrderStore>,
    lease: Option<KeyLease>,
    give_up: Duration,
}

impl ReleaseOnDrop {
    fn disarm(mut self) {
        self.lease = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let (store, give_up) = (Arc::clone(&self.store), self.give_up);
        // Drop cannot await; outside a runtime (never in the server) the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let started = tokio::time::Instant::now();
                let mut pause = Duration::from_millis(50);
                while let Err(error) = store.release_key(&lease).await {
                    if started.elapsed() + pause >= give_up {
                        tracing::warn!(%error, "could not release an idempotency key; its lease expires by itself");
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).expect("header value"));
        }
        map
    }

    #[test]
    fn no_header_means_no_key() {
        assert!(matches!(key_from(&headers(&[])), Ok(None)));
    }

    #[test]
    fn one_valid_header_is_the_key() {
        let key = key_from(&headers(&[b"\"abc-123\""])).ok().flatten().map(|k| k.to_string());
        assert_eq!(key.as_deref(), Some("abc-123"));
    }

    #[test]
    fn repeated_opaque_or_bad_headers_are_malformed_requests() {
        for bad in [&[b"a".as_slice(), b"b".as_slice()][..], &[b"caf\xc3\xa9"], &[b"a b"], &[b""]] {
            let Err(ApiError::MalformedRequest(why)) = key_from(&headers(bad)) else {
                panic!("expected a 400 for {bad:?}");
            };
            assert!(why.starts_with("Idempotency-Key "), "{why}");
        }
    }
}
