use std::sync::atomic::AtomicBool;

use async_trait::async_trait;

use super::*;
use crate::domain::{Money, Stale};

/// The tests that fail before storage use `refuse`: a store call there would be a bug.
type Store = crate::domain::memory_store::MemoryStore;

/// A scripted lookup: answers `answer` after `delay`, or refuses / knows the key unknown at
/// once; records whether a fetch started and whether it was dropped before it finished.
struct Scripted<T> {
    delay: Duration,
    answer: Option<Result<Option<T>, UpstreamError>>,
    refusal: Option<UpstreamError>,
    known_unknown: bool,
    /// The last good answer the adapter kept.
    stale: Option<T>,
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
    fn stale(&self, _: &str) -> Option<Stale<T>> {
        self.stale.clone().map(|value| Stale { value, age: Duration::from_secs(30) })
    }
}

fn answering<T>(delay: Duration, answer: Result<Option<T>, UpstreamError>) -> Scripted<T> {
    Scripted {
        delay,
        answer: Some(answer),
        refusal: None,
        known_unknown: false,
        stale: None,
        started: Arc::default(),
        cancelled: Arc::default(),
    }
}

fn service(users: Scripted<User>, products: Scripted<Product>) -> OrderService {
    let store = Store { refuse: true, ..Store::default() };
    OrderService::new(Arc::new(users), Arc::new(products), Arc::new(store), Duration::from_secs(2))
}

/// A service whose orders are stored in `store`.
fn storing(users: Scripted<User>, products: Scripted<Product>, store: &Arc<Store>) -> OrderService {
    let store: Arc<dyn OrderStore> = Arc::clone(store) as Arc<dyn OrderStore>;
    OrderService::new(Arc::new(users), Arc::new(products), store, Duration::from_secs(2))
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
            Err(PlaceOrderError::Upstream { upstream: Upstream::Product, source: UpstreamError::CircuitOpen { .. } })
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

fn classic_at(cents: i64) -> Product {
    Product { name: "Classic Box".into(), price: Money::from_cents(cents).expect("price") }
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_with_a_last_good_answer_still_places_the_order_marked_degraded() {
    for failure in [
        UpstreamError::ServerError(503),
        UpstreamError::Timeout,
        UpstreamError::Connect("refused".into()),
        UpstreamError::DeadlineExceeded,
        UpstreamError::RetryBudgetExhausted(Box::new(UpstreamError::ServerError(500))),
    ] {
        let users = answering(Duration::from_millis(300), Ok(Some(ada())));
        let products =
            Scripted { stale: Some(classic_at(899)), ..answering(Duration::from_millis(200), Err(failure.clone())) };
        let store = Arc::new(Store::default());
        let (user_id, code) = ids();
        let order = storing(users, products, &store).place_order(&user_id, &code, None).await.expect("placed");
        assert_eq!(order.degraded, vec![Upstream::Product], "{failure:?}");
        assert_eq!(order.total_amount.cents(), 899, "the last good price");
        assert_eq!(store.orders.lock().expect("lock").len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_404_or_a_wrong_request_is_never_replaced_by_a_stale_answer() {
    let cases: [(Result<Option<Product>, UpstreamError>, &str); 3] = [
        (Ok(None), "UnknownProduct"),
        (Err(UpstreamError::UnexpectedStatus(403)), "Upstream"),
        (Err(UpstreamError::BulkheadFull), "Upstream"),
    ];
    for (answer, expected) in cases {
        let users = answering(Duration::ZERO, Ok(Some(ada())));
        let products = Scripted { stale: Some(classic_at(999)), ..answering(Duration::ZERO, answer) };
        let (user_id, code) = ids();
        let result = service(users, products).place_order(&user_id, &code, None).await;
        assert!(format!("{result:?}").contains(expected), "{result:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_last_good_answer_the_order_fails_as_it_would_have() {
    let users = answering(Duration::ZERO, Ok(Some(ada())));
    let products = answering::<Product>(Duration::ZERO, Err(UpstreamError::ServerError(500)));
    let (user_id, code) = ids();
    let result = service(users, products).place_order(&user_id, &code, None).await;
    assert!(
        matches!(
            result,
            Err(PlaceOrderError::Upstream { upstream: Upstream::Product, source: UpstreamError::ServerError(500) })
        ),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_with_a_last_good_answer_still_looks_the_other_upstream_up() {
    let users = answering(Duration::from_millis(300), Ok(Some(ada())));
    let user_started = Arc::clone(&users.started);
    let open = UpstreamError::CircuitOpen { retry_after: Duration::from_secs(3) };
    let products =
        Scripted { refusal: Some(open), stale: Some(classic_at(999)), ..answering(Duration::ZERO, Ok(None)) };
    let product_started = Arc::clone(&products.started);
    let store = Arc::new(Store::default());
    let (user_id, code) = ids();
    let order = storing(users, products, &store).place_order(&user_id, &code, None).await.expect("placed");
    assert_eq!(order.degraded, vec![Upstream::Product]);
    assert!(user_started.load(Ordering::SeqCst), "the user is still looked up live");
    assert!(!product_started.load(Ordering::SeqCst), "no request to an open breaker");
}

#[tokio::test(start_paused = true)]
async fn both_upstreams_may_stand_in_and_the_order_says_both() {
    let users = Scripted { stale: Some(ada()), ..answering(Duration::ZERO, Err(UpstreamError::Timeout)) };
    let products = Scripted { stale: Some(classic_at(999)), ..answering(Duration::ZERO, Err(UpstreamError::Timeout)) };
    let store = Arc::new(Store::default());
    let (user_id, code) = ids();
    let order = storing(users, products, &store).place_order(&user_id, &code, None).await.expect("placed");
    assert_eq!(order.degraded, vec![Upstream::User, Upstream::Product]);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_cut_off_by_the_deadline_falls_back_at_the_deadline() {
    let users = answering(Duration::ZERO, Ok(Some(ada())));
    let products = Scripted { stale: Some(classic_at(999)), ..answering(Duration::from_secs(60), Ok(None)) };
    let store = Arc::new(Store::default());
    let started = Instant::now();
    let (user_id, code) = ids();
    let order = storing(users, products, &store).place_order(&user_id, &code, None).await.expect("placed");
    assert_eq!((order.degraded, started.elapsed()), (vec![Upstream::Product], Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn a_new_deadline_applies_to_the_next_order() {
    let users = answering(Duration::from_secs(60), Ok(Some(ada())));
    let products = answering(Duration::from_secs(60), Ok(Some(classic())));
    let orders = service(users, products);
    orders.set_deadline(Duration::from_millis(500));
    let started = Instant::now();
    let (user_id, code) = ids();
    let result = orders.place_order(&user_id, &code, None).await;
    assert!(matches!(result, Err(PlaceOrderError::DeadlineExceeded)), "{result:?}");
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}
