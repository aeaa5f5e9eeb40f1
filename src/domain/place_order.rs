//! The use case: look up the user and the product at once, then store the order with its event.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::idempotency::KeyCompletion;
use super::ids::{ProductCode, UserId};
use super::order::{Order, Product, User};
use crate::storage::{OrderStore, StoreError};
use crate::upstream::{Upstream, UpstreamClient, UpstreamError};

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
    users: UpstreamClient<User>,
    products: UpstreamClient<Product>,
    store: Arc<dyn OrderStore>,
    deadline: Duration,
}

impl OrderService {
    pub fn new(
        users: UpstreamClient<User>,
        products: UpstreamClient<Product>,
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
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use async_trait::async_trait;
    use tower::util::BoxCloneSyncService;
    use uuid::Uuid;

    use super::*;
    use crate::config::Config;
    use crate::domain::Money;
    use crate::domain::idempotency::{KeyClaim, KeyLease};
    use crate::storage::{KeyTimes, ListFilter};
    use crate::upstream::UpstreamRequest;
    use crate::upstream::breaker::BreakerHandle;
    use crate::upstream::stack::{self, StackConfig};

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
        fn outbox(&self) -> Arc<dyn crate::outbox::Outbox> {
            unreachable!()
        }
    }

    /// Sets its flag when dropped: proof that a lookup's future was cancelled.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn defaults() -> StackConfig {
        Config::from_lookup(|_| None).expect("defaults").product_stack
    }

    /// A lookup answering `answer` after `delay`, behind breakers that never see its calls.
    fn client<T: Clone + Send + Sync + 'static>(
        delay: Duration,
        answer: Result<Option<T>, UpstreamError>,
        dropped: Arc<AtomicBool>,
    ) -> UpstreamClient<T> {
        let service = BoxCloneSyncService::new(tower::service_fn(move |_: UpstreamRequest| {
            let answer = answer.clone();
            let flag = DropFlag(Arc::clone(&dropped));
            async move {
                tokio::time::sleep(delay).await;
                std::mem::forget(flag);
                answer
            }
        }));
        UpstreamClient::new(service, BreakerHandle::new(Upstream::User, defaults().breaker))
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_the_order_before_any_lookup_starts() {
        let refused = tower::service_fn(|_: UpstreamRequest| async { Err(UpstreamError::Connect("refused".into())) });
        let (products, _) = stack::compose::<_, Product>(refused, Upstream::Product, &defaults());
        let user_started = Arc::new(AtomicBool::new(false));
        let started = Arc::clone(&user_started);
        let users = UpstreamClient::new(
            BoxCloneSyncService::new(tower::service_fn(move |_: UpstreamRequest| {
                started.store(true, Ordering::SeqCst);
                async { Ok(Some(ada())) }
            })),
            BreakerHandle::new(Upstream::User, defaults().breaker),
        );
        let service = service(users, products);
        let (user_id, code) = ids();
        let mut orders = 0;
        while !matches!(
            service.place_order(&user_id, &code, None).await,
            Err(PlaceOrderError::Upstream { source: UpstreamError::CircuitOpen { .. }, .. })
        ) {
            orders += 1;
            assert!(orders < 50, "the product breaker never opened");
        }
        user_started.store(false, Ordering::SeqCst);
        let result = service.place_order(&user_id, &code, None).await;
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
    }

    /// A client over `answer`, counting the lookups that reach it.
    fn counted<T: Clone + Send + Sync + 'static>(
        answer: Option<T>,
        calls: Arc<AtomicU32>,
        upstream: Upstream,
    ) -> UpstreamClient<T> {
        let inner = tower::service_fn(move |_: UpstreamRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(answer)
            }
        });
        stack::compose(inner, upstream, &defaults()).0
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_answered_unknown_moments_ago_fails_the_order_before_either_lookup() {
        let (user_calls, product_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let users = counted::<User>(None, Arc::clone(&user_calls), Upstream::User);
        let price = Money::from_cents(999).expect("price");
        let product = Product { name: "x".into(), price };
        let products = counted(Some(product), Arc::clone(&product_calls), Upstream::Product);
        let service = service(users, products);
        let (user_id, code) = ids();
        for _ in 0..5 {
            let result = service.place_order(&user_id, &code, None).await;
            assert!(matches!(result, Err(PlaceOrderError::UnknownUser)), "{result:?}");
        }
        let calls = (user_calls.load(Ordering::SeqCst), product_calls.load(Ordering::SeqCst));
        assert_eq!(calls, (1, 1), "only the first order asked; the others were answered from its 404");
        tokio::time::advance(defaults().not_found_ttl).await;
        let _ = service.place_order(&user_id, &code, None).await;
        assert_eq!(user_calls.load(Ordering::SeqCst), 2, "asked again after the TTL");
    }

    fn service(users: UpstreamClient<User>, products: UpstreamClient<Product>) -> OrderService {
        OrderService::new(users, products, Arc::new(NoStore), Duration::from_secs(2))
    }

    fn ids() -> (UserId, ProductCode) {
        (UserId::parse("7c11e1ce2741").expect("id"), ProductCode::parse("classic-box").expect("code"))
    }

    fn ada() -> User {
        User { first_name: "Ada".into(), last_name: "Lovelace".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_definitive_failure_cancels_the_other_lookup_at_once() {
        let user_cancelled = Arc::new(AtomicBool::new(false));
        let users = client(Duration::from_secs(10), Ok(Some(ada())), Arc::clone(&user_cancelled));
        let products = client::<Product>(Duration::from_millis(5), Ok(None), Arc::default());
        let started = Instant::now();
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(matches!(result, Err(PlaceOrderError::UnknownProduct)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(5), "answered when the product failed");
        assert!(user_cancelled.load(Ordering::SeqCst), "the user lookup was dropped, not awaited");
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_lookups_end_exactly_at_the_deadline() {
        let users = client(Duration::from_secs(60), Ok(Some(ada())), Arc::default());
        let price = Money::from_cents(999).expect("price");
        let products = client(Duration::from_secs(60), Ok(Some(Product { name: "x".into(), price })), Arc::default());
        let started = Instant::now();
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(matches!(result, Err(PlaceOrderError::DeadlineExceeded)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_error_names_its_upstream() {
        let users = client(Duration::from_millis(300), Err(UpstreamError::ServerError(500)), Arc::default());
        let products = client::<Product>(Duration::from_secs(60), Ok(None), Arc::default());
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
