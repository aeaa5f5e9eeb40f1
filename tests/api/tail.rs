//! Beating the tail: hedged lookups and deadline propagation end to end, against scripted
//! upstreams. Assertions count requests, read metrics and compare header values with the time
//! the service had left — with slack, never a measured duration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::kit::{ADA, Backend, TestApp, Upstreams, eventually, problem, requests_to, sample};

const HEADER: &str = "x-envoy-expected-rq-timeout-ms";

/// The Classic Box, answered at once except for the calls numbered in `slow` (from 1), which
/// take `slow_delay`.
pub(crate) struct ClassicBox {
    pub(crate) calls: AtomicUsize,
    pub(crate) slow: Vec<usize>,
    pub(crate) slow_delay: Duration,
}

impl Respond for ClassicBox {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let body = serde_json::json!({"code": "classic-box", "name": "Classic Box", "price": 9.99});
        let delay = if self.slow.contains(&n) { self.slow_delay } else { Duration::ZERO };
        ResponseTemplate::new(200).set_body_json(body).set_delay(delay)
    }
}

pub(crate) async fn upstreams_with(product: impl Respond + 'static) -> Upstreams {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(path("/products/classic-box"))
        .respond_with(product)
        .mount(upstreams.mocks().1)
        .await;
    upstreams
}

/// Enough good answers for the hedge layer to know what normal is (it needs 16).
pub(crate) const WARM_UP: usize = 20;

async fn warm_up(app: &TestApp) {
    for _ in 0..WARM_UP {
        assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    }
}

#[tokio::test]
async fn a_slow_lookup_is_hedged_the_hedge_answers_and_the_slow_attempt_is_cancelled() {
    let slow = ClassicBox { calls: AtomicUsize::new(0), slow: vec![WARM_UP + 1], slow_delay: Duration::from_secs(5) };
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams_with(slow).await)
        .env("PRODUCT_HEDGE_MIN_DELAY_MS", "100")
        .spawn()
        .await;
    warm_up(&app).await;

    let response = app.post_order(ADA, "classic-box").await;
    assert_eq!(response.status(), 201, "answered by the hedge, not after the 800 ms attempt timeout");
    let (_, products) = app.upstreams.mocks();
    assert_eq!(requests_to(products).await, WARM_UP + 2, "the slow attempt and its hedge");
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "upstream_hedges_total", &[("upstream", "product")]), 1.0);
    assert_eq!(sample(&metrics, "upstream_hedges_total", &[("upstream", "user")]), 0.0);
    let product =
        |outcome| sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", outcome)]);
    // Cancelled, the slow attempt is no sample at all: awaited, it would be a timeout.
    assert_eq!((product("success"), product("timeout")), ((WARM_UP + 1) as f64, 0.0));
    assert_eq!(app.breaker("product").await, ("closed".to_owned(), 0), "the cancelled loser is no failure");
}

#[tokio::test]
async fn no_more_hedges_and_retries_than_the_budget_while_the_upstream_hangs() {
    let upstreams = upstreams_with(ClassicBox {
        calls: AtomicUsize::new(0),
        slow: (WARM_UP + 1..10_000).collect(),
        slow_delay: Duration::from_secs(5),
    })
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("ORDER_DEADLINE_MS", "250")
        .env("PRODUCT_ATTEMPT_TIMEOUT_MS", "200")
        .env("PRODUCT_HEDGE_MIN_DELAY_MS", "20")
        .env("PRODUCT_RETRY_BUDGET_PERCENT", "20")
        .env("PRODUCT_RETRY_BUDGET_MIN_PER_SEC", "0")
        .env("PRODUCT_BREAKER_MIN_CALLS", "10000")
        .env("PRODUCT_BREAKER_KEY_MIN_CALLS", "10000")
        .env("PRODUCT_STALE_IF_ERROR_MS", "0")
        .spawn()
        .await;
    warm_up(&app).await;

    let hanging = 20;
    for _ in 0..hanging {
        let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
        // 504 timed out; 503 once a retry was due but the budget was spent.
        assert!(matches!(status, 503 | 504), "{body}");
    }
    let (_, products) = app.upstreams.mocks();
    let lookups = WARM_UP + hanging;
    let sent = requests_to(products).await;
    let metrics = app.metrics().await;
    let hedges = sample(&metrics, "upstream_hedges_total", &[("upstream", "product")]);
    let retries = sample(&metrics, "upstream_retries_total", &[("upstream", "product")]);
    assert!(hedges >= 1.0, "the first hanging lookups were hedged: {hedges}");
    assert!((sent - lookups) as f64 <= hedges + retries, "every extra request is a hedge or a retry");
    // 20 % of the 40 lookups in the budget's window, one more for rounding: never 2× the load.
    assert!(
        hedges + retries <= 0.2 * lookups as f64 + 1.0,
        "{hedges} hedges + {retries} retries for {lookups} lookups"
    );
}

/// Records each request's deadline header and when it arrived.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, u64)>>>,
    status: u16,
    delay: Duration,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = request.headers.get(HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(u64::MAX);
        self.seen.lock().expect("lock").push((Instant::now(), header));
        let body = serde_json::json!({"id": ADA, "firstName": "Ada", "lastName": "Lovelace"});
        ResponseTemplate::new(self.status).set_body_json(body).set_delay(self.delay)
    }
}

#[tokio::test]
async fn every_attempt_tells_the_upstream_the_time_the_order_has_left_retries_included() {
    let failing = Recorder { status: 503, delay: Duration::from_millis(100), ..Recorder::default() };
    let user = Recorder { status: 200, ..Recorder::default() };
    let upstreams = Upstreams::mock().await;
    Mock::given(method("GET")).respond_with(failing.clone()).mount(upstreams.mocks().1).await;
    Mock::given(method("GET")).respond_with(user.clone()).mount(upstreams.mocks().0).await;
    // A deadline shorter than the attempt timeout: every header is the order's time left.
    let deadline_ms = 600;
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("ORDER_DEADLINE_MS", &deadline_ms.to_string())
        .env("PRODUCT_BACKOFF_BASE_MS", "1")
        .env("PRODUCT_BACKOFF_MAX_MS", "1")
        .spawn()
        .await;

    let (status, _) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!(status, 502, "three failed attempts");
    let attempts = failing.seen.lock().expect("lock").clone();
    assert_eq!(attempts.len(), 3);
    let (first, _) = attempts[0];
    // Arrival k − arrival 1 is time the order had spent; header + that is what it had at the
    // first attempt, a few ms under the deadline (the time to start the order and send).
    let slack = 40;
    for (k, (arrived, header)) in attempts.iter().enumerate() {
        let spent = arrived.duration_since(first).as_millis() as u64;
        let left_at_first = header + spent;
        // (+5: a later request may travel a little faster than the first, which connected.)
        assert!(
            (deadline_ms - slack..=deadline_ms + 5).contains(&left_at_first),
            "attempt {}: header {header} ms after {spent} ms spent (expected about {deadline_ms} − {spent})",
            k + 1
        );
    }
    let users = user.seen.lock().expect("lock").clone();
    assert!(users.iter().all(|(_, h)| (deadline_ms - slack..=deadline_ms).contains(h)), "user lookups: {users:?}");
}

#[tokio::test]
async fn the_attempt_timeout_bounds_the_header_when_it_is_sooner_than_the_deadline() {
    let user = Recorder { status: 200, ..Recorder::default() };
    let upstreams = Upstreams::mock().await;
    upstreams.mount_classic_box(Duration::ZERO).await;
    Mock::given(method("GET")).respond_with(user.clone()).mount(upstreams.mocks().0).await;
    let app =
        TestApp::builder(Backend::Sqlite).upstreams(upstreams).env("USER_ATTEMPT_TIMEOUT_MS", "300").spawn().await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    let seen = user.seen.lock().expect("lock").clone();
    assert!(seen.len() == 1 && (260..=300).contains(&seen[0].1), "{seen:?}");
}

#[tokio::test]
async fn the_simulator_stops_the_family_box_work_when_the_service_stops_waiting() {
    let app = TestApp::builder(Backend::Sqlite).env("ORDER_DEADLINE_MS", "1000").spawn().await;
    let (status, _) = problem(app.post_order(ADA, "family-box").await).await;
    assert_eq!(status, 504);
    let sim = &app.upstreams.sim().sim;
    let stats = eventually(Duration::from_secs(5), async || sim.stats(), |s| s.working == 0).await;
    let products = stats.products;
    assert_eq!(stats.working, 0, "no 60 s of work goes on for an order that gave up after 1 s");
    assert!(products.abandoned >= 1 && products.abandoned == products.by_key["family-box"], "{products:?}");
    assert!(products.work_done_ms <= 1000 * products.abandoned, "each attempt worked ≤ the 1 s deadline: {products:?}");
    assert!(products.work_saved_ms >= 59_000 * products.abandoned, "{products:?}");
}
