//! The use case: look up the user and the product at once (a stale answer standing in for a
//! failing upstream when allowed), then store the order with its event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::idempotency::KeyCompletion;
use super::ids::{ProductCode, UserId};
use super::lookup::{Lookup, Upstream, UpstreamError};
use super::order::{Order, Product, User};
use super::store::{OrderStore, StoreError};
use crate::telemetry::metrics;

/// Why an order was not placed. Each variant maps to one HTTP problem in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("user-service does not know this user")]
    UnknownUser,
    #[error("product-service does not know this product")]
    UnknownProduct,
    #[error("{upstream}-service: {source}")]
    Upstream { upstream: Upstream, source: UpstreamError },
    #[error("the order's deadline ran out waiting on the upstreams")]
    DeadlineExceeded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns a new order into the idempotency key completion stored with it (the response to replay).
pub type CompleteKey<'a> = dyn Fn(&Order) -> KeyCompletion + Send + Sync + 'a;

/// Places orders; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct OrderService {
    users: Arc<dyn Lookup<User>>,
    products: Arc<dyn Lookup<Product>>,
    store: Arc<dyn OrderStore>,
    /// `ORDER_DEADLINE_MS`, in milliseconds; a reload may change it for the next orders.
    deadline_ms: Arc<AtomicU64>,
}

/// A lookup's answer, live or stale.
struct Looked<T> {
    value: T,
    stale: bool,
}

impl OrderService {
    pub fn new(
        users: Arc<dyn Lookup<User>>,
        products: Arc<dyn Lookup<Product>>,
        store: Arc<dyn OrderStore>,
        deadline: Duration,
    ) -> Self {
        for upstream in Upstream::ALL {
            metrics::upstream_fallbacks_registered(upstream.as_str());
        }
        let deadline_ms = Arc::new(AtomicU64::new(deadline.as_millis() as u64));
        Self { users, products, store, deadline_ms }
    }

    /// The deadline of the orders placed from now on (a reload).
    pub fn set_deadline(&self, deadline: Duration) {
        self.deadline_ms.store(deadline.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fetches both upstreams concurrently within the deadline; the first definitive failure
    /// drops (cancels) the other fetch. An id its upstream answered 404 moments ago, or a lookup
    /// an open breaker refuses, fails the order before either fetch starts. Then order and
    /// outbox row commit in one transaction, together with the idempotency key's completion
    /// that `complete` makes from the new order.
    ///
    /// Stale-if-error: a lookup that fails because its upstream is unwell (a 5xx, a timeout,
    /// no connection, an open breaker; [`UpstreamError::allows_stale`]) uses the upstream's last
    /// good answer for that key when the adapter kept one young enough, and the order says so
    /// in `degraded`. A 404 is an answer, never replaced. Without a stale answer the order fails
    /// exactly as it would have.
    #[tracing::instrument(
        name = "place_order",
        skip_all,
        fields(otel.name = "place order", user_id = user_id.as_str(), product_code = product_code.as_str(), order_id)
    )]
    pub async fn place_order(
        &self,
        user_id: &UserId,
        product_code: &ProductCode,
        complete: Option<&CompleteKey<'_>>,
    ) -> Result<Order, PlaceOrderError> {
        let deadline = Instant::now() + Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed));
        if self.products.known_unknown(product_code.as_str()) {
            return Err(PlaceOrderError::UnknownProduct);
        }
        if self.users.known_unknown(user_id.as_str()) {
            return Err(PlaceOrderError::UnknownUser);
        }
        let product_refused = match self.products.refusal(product_code.as_str()) {
            Some(refused) => Some(stand_in(Upstream::Product, &*self.products, product_code.as_str(), refused)?),
            None => None,
        };
        let user_refused = match self.users.refusal(user_id.as_str()) {
            Some(refused) => Some(stand_in(Upstream::User, &*self.users, user_id.as_str(), refused)?),
            None => None,
        };
        let user = async {
            match user_refused {
                Some(stale) => Ok(stale),
                None => look_up(Upstream::User, &*self.users, user_id.as_str(), deadline).await,
            }
        };
        let product = async {
            match product_refused {
                Some(stale) => Ok(stale),
                None => look_up(Upstream::Product, &*self.products, product_code.as_str(), deadline).await,
            }
        };
        let (user, product) = tokio::try_join!(user, product)?;
        let degraded: Vec<Upstream> = [(Upstream::User, user.stale), (Upstream::Product, product.stale)]
            .into_iter()
            .filter(|(_, s)| *s)
            .map(|(u, _)| u)
            .collect();
        let order = Order::new(user_id, product_code, &user.value, &product.value).degraded_by(&degraded);
        tracing::Span::current().record("order_id", tracing::field::display(order.id));
        let completion = complete.map(|complete| complete(&order));
        self.store.insert_order(&order, completion.as_ref()).await?;
        Ok(order)
    }
}

/// One lookup within the deadline (each bounds its own wait, so a stale answer can still stand
/// in for one cut off by the deadline); a 404 is the upstream's definitive "unknown".
async fn look_up<T: Send>(
    upstream: Upstream,
    lookup: &dyn Lookup<T>,
    key: &str,
    deadline: Instant,
) -> Result<Looked<T>, PlaceOrderError> {
    let fetched = tokio::time::timeout_at(deadline, lookup.fetch(key, deadline))
        .await
        .unwrap_or(Err(UpstreamError::DeadlineExceeded));
    match fetched {
        Ok(Some(value)) => Ok(Looked { value, stale: false }),
        Ok(None) => Err(match upstream {
            Upstream::User => PlaceOrderError::UnknownUser,
            Upstream::Product => PlaceOrderError::UnknownProduct,
        }),
        Err(error) => stand_in(upstream, lookup, key, error),
    }
}

/// The last good answer in place of a failed lookup, when the failure allows one and the
/// adapter kept one; otherwise the failure itself. Counted as `upstream_fallbacks_total`.
fn stand_in<T>(
    upstream: Upstream,
    lookup: &dyn Lookup<T>,
    key: &str,
    error: UpstreamError,
) -> Result<Looked<T>, PlaceOrderError> {
    if error.allows_stale()
        && let Some(stale) = lookup.stale(key)
    {
        metrics::upstream_fallback(upstream.as_str());
        tracing::warn!(
            upstream = upstream.as_str(),
            key,
            age_ms = stale.age.as_millis() as u64,
            error = %error,
            "upstream failed: its last good answer stands in (stale-if-error)"
        );
        return Ok(Looked { value: stale.value, stale: true });
    }
    Err(upstream_failure(upstream, error))
}

fn upstream_failure(upstream: Upstream, source: UpstreamError) -> PlaceOrderError {
    match source {
        UpstreamError::DeadlineExceeded => PlaceOrderError::DeadlineExceeded,
        source => PlaceOrderError::Upstream { upstream, source },
    }
}

#[cfg(test)]
#[path = "place_order_tests.rs"]
mod tests;
