//! The use case: look up the user and the product at once, then store the order with its event.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::idempotency::KeyCompletion;
use super::ids::{ProductCode, UserId};
use super::lookup::{Lookup, Upstream, UpstreamError};
use super::order::{Order, Product, User};
use super::store::{OrderStore, StoreError};

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
    deadline: Duration,
}

impl OrderService {
    pub fn new(
        users: Arc<dyn Lookup<User>>,
        products: Arc<dyn Lookup<Product>>,
        store: Arc<dyn OrderStore>,
        deadline: Duration,
    ) -> Self {
        Self { users, products, store, deadline }
    }

    /// Fetches both upstreams concurrently within the deadline; the first definitive failure
    /// drops (cancels) the other fetch. An id its upstream answered 404 moments ago, or a lookup
    /// an open breaker refuses, fails the order before either fetch starts. Then order and
    /// outbox row commit in one transaction, together with the idempotency key's completion
    /// that `complete` makes from the new order.
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
        let deadline = Instant::now() + self.deadline;
        if self.products.known_unknown(product_code.as_str()) {
            return Err(PlaceOrderError::UnknownProduct);
        }
        if self.users.known_unknown(user_id.as_str()) {
            return Err(PlaceOrderError::UnknownUser);
        }
        if let Some(source) = self.products.refusal(product_code.as_str()) {
            return Err(upstream_failure(Upstream::Product, source));
        }
        if let Some(source) = self.users.refusal(user_id.as_str()) {
            return Err(upstream_failure(Upstream::User, source));
        }
        let user = async {
            match self.users.fetch(user_id.as_str(), deadline).await {
                Ok(Some(user)) => Ok(user),
                Ok(None) => Err(PlaceOrderError::UnknownUser),
                Err(source) => Err(upstream_failure(Upstream::User, source)),
            }
        };
        let product = async {
            match self.products.fetch(product_code.as_str(), deadline).await {
                Ok(Some(product)) => Ok(product),
                Ok(None) => Err(PlaceOrderError::UnknownProduct),
                Err(source) => Err(upstream_failure(Upstream::Product, source)),
            }
        };
        let (user, product) = tokio::time::timeout_at(deadline, async { tokio::try_join!(user, product) })
            .await
            .map_err(|_| PlaceOrderError::DeadlineExceeded)??;
        let order = Order::new(user_id, product_code, &user, &product);
        tracing::Span::current().record("order_id", tracing::field::display(order.id));
        let completion = complete.map(|complete| complete(&order));
        self.store.insert_order(&order, completion.as_ref()).await?;
        Ok(order)
    }
}

fn upstream_failure(upstream: Upstream, source: UpstreamError) -> PlaceOrderError {
    match source {
        UpstreamError::DeadlineExceeded => PlaceOrderError::DeadlineExceeded,
        source => PlaceOrderError::Upstream { upstream, source },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use uuid::Uuid;

    use super::*;
    use crate::domain::Money;
    use crate::domain::idempotency::{KeyClaim, KeyLease, KeyTimes};
    use crate::domain::store::ListFilter;

    /// These tests fail before storage; a store call would be a bug.
    struct NoStore;

    #[async_trait]
    impl OrderStore for NoStore {
        async fn insert_order(&self, _: &Order, _: Option<&KeyCompletion>) -> Result<(), StoreError> {
            unreachable!("the order must fail before it is stored")
        }
        async fn claim_key(&self, _: &KeyLease, _: &str, _: KeyTimes) -> Result<KeyClaim, StoreError> {
            unreachable!()
        }
        async fn release_key(&self, _: &KeyLease) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn purge_keys(&self, _: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
            unreachable!()
        }
        async fn get_order(&self, _: Uuid) -> Result<Option<Order>, StoreError> {
            unreachable!()
        }
        async fn list_orders(&self, _: &ListFilter) -> Result<Vec<Order>, StoreError> {
            unreachable!()
        }
        async fn ping(&self) -> Result<(), StoreError> {
            unreachable!()
        }
        fn backend(&self) -> &'static str {
            "none"
        }
    }

    /// A scripted lookup: answers `answer` after `delay`, or refuses / knows the key unknown at
    /// once; records whether a fetch started and whether it was dropped before it finished.
    struct Scripted<T> {
        delay: Duration,
        answer: Option<Result<Option<T>, UpstreamError>>,
        refusal: Option<UpstreamError>,
        known_unknown: bool,
        started: Arc<AtomicBool>,
        cancelled: Arc<AtomicBool>,
    }

    /// Sets its flag when dropped: proof that a lookup's future was cancelled.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl<T: Clone + Send + Sync> Lookup<T> for Scripted<T> {
        fn known_unknown(&self, _: &str) -> bool {
            self.known_unknown
        }
        fn refusal(&self, _: &str) -> Option<UpstreamError> {
            self.refusal.clone()
        }
        async fn fetch(&self, _: &str, _: Instant) -> Result<Option<T>, UpstreamError> {
            self.started.store(true, Ordering::SeqCst);
            let flag = DropFlag(Arc::clone(&self.cancelled));
            tokio::time::sleep(self.delay).await;
            std::mem::forget(flag);
            self.answer.clone().unwrap_or(Ok(None))
        }
    }

    fn answering<T>(delay: Duration, answer: Result<Option<T>, UpstreamError>) -> Scripted<T> {
        Scripted {
            delay,
            answer: Some(answer),
            refusal: None,
            known_unknown: false,
            started: Arc::default(),
            cancelled: Arc::default(),
        }
    }

    fn service(users: Scripted<User>, products: Scripted<Product>) -> OrderService {
        OrderService::new(Arc::new(users), Arc::new(products), Arc::new(NoStore), Duration::from_secs(2))
    }

    fn ids() -> (UserId, ProductCode) {
        (UserId::parse("7c11e1ce2741").expect("id"), ProductCode::parse("classic-box").expect("code"))
    }

    fn ada() -> User {
        User { first_name: "Ada".into(), last_name: "Lovelace".into() }
    }

    fn classic() -> Product {
        Product { name: "Classic Box".into(), price: Money::from_cents(999).expect("price") }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_lookup_fails_the_order_before_any_lookup_starts() {
        let users = answering(Duration::from_millis(300), Ok(Some(ada())));
        let user_started = Arc::clone(&users.started);
        let open = UpstreamError::CircuitOpen { retry_after: Duration::from_secs(3) };
        let products = Scripted { refusal: Some(open), ..answering(Duration::ZERO, Ok(Some(classic()))) };
        let product_started = Arc::clone(&products.started);
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(
            matches!(
                result,
                Err(PlaceOrderError::Upstream {
                    upstream: Upstream::Product,
                    source: UpstreamError::CircuitOpen { .. }
                })
            ),
            "{result:?}"
        );
        assert!(!user_started.load(Ordering::SeqCst), "no user lookup for an order refused anyway");
        assert!(!product_started.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_known_unknown_fails_the_order_before_either_lookup() {
        let users = Scripted { known_unknown: true, ..answering(Duration::ZERO, Ok(None)) };
        let user_started = Arc::clone(&users.started);
        let products = answering(Duration::ZERO, Ok(Some(classic())));
        let product_started = Arc::clone(&products.started);
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(matches!(result, Err(PlaceOrderError::UnknownUser)), "{result:?}");
        assert!(!user_started.load(Ordering::SeqCst) && !product_started.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_definitive_failure_cancels_the_other_lookup_at_once() {
        let users = answering(Duration::from_secs(10), Ok(Some(ada())));
        let user_cancelled = Arc::clone(&users.cancelled);
        let products = answering::<Product>(Duration::from_millis(5), Ok(None));
        let started = Instant::now();
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(matches!(result, Err(PlaceOrderError::UnknownProduct)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(5), "answered when the product failed");
        assert!(user_cancelled.load(Ordering::SeqCst), "the user lookup was dropped, not awaited");
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_lookups_end_exactly_at_the_deadline() {
        let users = answering(Duration::from_secs(60), Ok(Some(ada())));
        let products = answering(Duration::from_secs(60), Ok(Some(classic())));
        let started = Instant::now();
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(matches!(result, Err(PlaceOrderError::DeadlineExceeded)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_error_names_its_upstream() {
        let users = answering(Duration::from_millis(300), Err(UpstreamError::ServerError(500)));
        let products = answering::<Product>(Duration::from_secs(60), Ok(None));
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(
            matches!(
                result,
                Err(PlaceOrderError::Upstream { upstream: Upstream::User, source: UpstreamError::ServerError(500) })
            ),
            "{result:?}"
        );
    }
}
