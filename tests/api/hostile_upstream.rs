//! Upstreams that answer oddly or not at all: a 4xx or 3xx is asked once and never sent
//! elsewhere, a head or body over 64 KiB is not read, a hang opens the breaker whatever the deadline,
//! breakers and series read true without traffic, and unknown ids do not cost both upstreams
//! again and again.

use std::time::Duration;

use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::kit::{ADA, Backend, TestApp, Upstreams, free_port, problem, requests_to, sample, series};

/// wiremock upstreams with the Classic Box healthy and the user-service answering `status`
/// (with `headers`) for Ada.
async fn user_service_answering(status: u16, headers: &[(&str, String)]) -> Upstreams {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_classic_box(Duration::ZERO).await;
    let (users, _) = upstreams.mocks();
    let mut answer = ResponseTemplate::new(status);
    for (name, value) in headers {
        answer = answer.insert_header(*name, value.as_str());
    }
    Mock::given(method("GET")).and(path(format!("/users/{ADA}"))).respond_with(answer).mount(users).await;
    upstreams
}

#[tokio::test]
async fn an_upstream_403_is_asked_once_answers_502_naming_it_and_opens_no_breaker() {
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(user_service_answering(403, &[]).await)
        // Breakers that would open on the first handful of failures, had the 403s counted.
        .env("USER_BREAKER_KEY_MIN_CALLS", "2")
        .env("USER_BREAKER_MIN_CALLS", "2")
        .env("USER_BREAKER_MIN_FAILING_KEYS", "1")
        .env("USER_BREAKER_OPEN_MS", "60000")
        .spawn()
        .await;

    let orders = 8;
    for order in 1..=orders {
        let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
        assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")), "order {order}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("403")), "names the status: {body}");
        let (users, _) = app.upstreams.mocks();
        assert_eq!(requests_to(users).await, order, "one request per order, never retried");
    }
    assert_eq!(app.breaker("user").await, ("closed".to_owned(), 0), "a 4xx says nothing about health");
}

#[tokio::test]
async fn a_redirect_is_never_followed_to_another_host() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"id": ADA, "firstName": "Eve", "lastName": "Dropper"}
        )))
        .mount(&elsewhere)
        .await;
    let location = format!("{}/users/{ADA}", elsewhere.uri());
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(user_service_answering(302, &[("location", location)]).await)
        .spawn()
        .await;

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")));
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("302")), "names the status: {body}");
    assert_eq!(requests_to(&elsewhere).await, 0, "the redirect's target never saw our lookup");
    let (users, _) = app.upstreams.mocks();
    assert_eq!(requests_to(users).await, 1, "a 3xx is not retried");
}

/// An upstream body is read to 64 KiB at most: a user-service that pads a valid answer to a
/// megabyte gets its lookup refused as unusable (502), however well-formed the rest is.
#[tokio::test]
async fn an_upstream_body_over_64_kib_is_refused_unread() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_classic_box(Duration::ZERO).await;
    let (users, _) = upstreams.mocks();
    // Valid JSON that decodes to Ada once read whole: only the size can refuse it.
    let padded = format!(r#"{{"id":"{ADA}","firstName":"Ada","lastName":"Lovelace"{}}}"#, " ".repeat(1024 * 1024));
    let answer = ResponseTemplate::new(200).set_body_raw(padded.into_bytes(), "application/json");
    Mock::given(method("GET")).and(path(format!("/users/{ADA}"))).respond_with(answer).mount(users).await;
    let app = TestApp::builder(Backend::Sqlite).upstreams(upstreams).spawn().await;

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("unusable")), "{body}");
    let metrics = app.metrics().await;
    let refused = sample(&metrics, "upstream_requests_total", &[("upstream", "user"), ("outcome", "invalid_response")]);
    assert!(refused >= 1.0, "counted as an unusable answer: {refused}");
}

/// An upstream's answer head is read to 64 KiB at most: a user-service that sends a 256 KiB
/// header before a valid body gets no answer read (502), and the service goes on serving.
#[tokio::test]
async fn an_upstream_answer_head_over_64_kib_is_not_read() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_classic_box(Duration::ZERO).await;
    let (users, _) = upstreams.mocks();
    let valid = format!(r#"{{"id":"{ADA}","firstName":"Ada","lastName":"Lovelace"}}"#);
    let answer = ResponseTemplate::new(200)
        .insert_header("x-padding", "p".repeat(256 * 1024).as_str())
        .set_body_raw(valid.into_bytes(), "application/json");
    Mock::given(method("GET")).and(path(format!("/users/{ADA}"))).respond_with(answer).mount(users).await;
    let app = TestApp::builder(Backend::Sqlite).upstreams(upstreams).spawn().await;

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")), "{body}");
    assert_eq!(app.get("/health/live").await.status(), 200, "and the service goes on");
}

#[tokio::test]
async fn with_no_traffic_an_open_breaker_reads_half_open_once_its_wait_is_over() {
    let app = TestApp::builder(Backend::Sqlite)
        .env("PRODUCT_SERVICE_URL", &format!("http://127.0.0.1:{}", free_port()))
        .env("PRODUCT_BREAKER_MIN_CALLS", "3")
        .env("PRODUCT_BREAKER_OPEN_MS", "300")
        .spawn()
        .await;
    let mut orders = 0;
    loop {
        let (_, body) = problem(app.post_order(ADA, "classic-box").await).await;
        if body["type"] == "/problems/circuit-open" {
            break;
        }
        orders += 1;
        assert!(orders < 10, "the product breaker never opened: {body}");
    }

    // No order from here on: only time passes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let metrics = app.metrics().await;
    let state = |state| sample(&metrics, "circuit_breaker_state", &[("upstream", "product"), ("state", state)]);
    assert_eq!((state("open"), state("half_open")), (0.0, 1.0), "the gauge reads the state as it is now");
    assert_eq!(app.breaker("product").await, ("half_open".to_owned(), 0), "readiness agrees");
    let half_opened = [("upstream", "product"), ("from", "open"), ("to", "half_open")];
    let counted = sample(&metrics, "circuit_breaker_transitions_total", &half_opened);
    assert!(counted >= 1.0, "the transition is counted");
    let again = app.metrics().await;
    assert_eq!(sample(&again, "circuit_breaker_transitions_total", &half_opened), counted, "and only once");
}

#[tokio::test]
async fn the_open_keys_gauge_drops_when_an_open_key_is_evicted() {
    let upstreams = Upstreams::healthy().await;
    let (_, products) = upstreams.mocks();
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).mount(products).await;
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("PRODUCT_MAX_ATTEMPTS", "1")
        .env("PRODUCT_BREAKER_KEY_MIN_CALLS", "2")
        .env("PRODUCT_BREAKER_MAX_KEYS", "1")
        .env("PRODUCT_BREAKER_OPEN_MS", "60000")
        .spawn()
        .await;
    let keys_open = |metrics: &str| sample(metrics, "circuit_breaker_keys_open", &[("upstream", "product")]);
    for _ in 0..2 {
        assert_eq!(app.post_order(ADA, "bad-1").await.status(), 502);
    }
    assert_eq!(keys_open(&app.metrics().await), 1.0, "bad-1 opened");
    // A second failing key takes the only slot: bad-1's open breaker is forgotten.
    assert_eq!(app.post_order(ADA, "bad-2").await.status(), 502);
    assert_eq!(app.breaker("product").await, ("closed".to_owned(), 0));
    assert_eq!(keys_open(&app.metrics().await), 0.0, "the gauge follows the eviction");
}

#[tokio::test]
async fn a_hang_opens_the_breaker_even_when_the_deadline_is_shorter_than_an_attempt() {
    // The attempt timeout (800 ms) never fires: every attempt is cut off by the deadline.
    let app = TestApp::builder(Backend::Sqlite)
        .env("ORDER_DEADLINE_MS", "700")
        .env("PRODUCT_BREAKER_KEY_MIN_CALLS", "3")
        .env("PRODUCT_BREAKER_OPEN_MS", "60000")
        .spawn()
        .await;
    for order in 1..=3 {
        let (status, body) = problem(app.post_order(ADA, "family-box").await).await;
        assert_eq!((status, body["type"].as_str()), (504, Some("/problems/deadline-exceeded")), "order {order}");
    }
    let (status, body) = problem(app.post_order(ADA, "family-box").await).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/circuit-open")), "fails fast now");
    assert_eq!(app.upstreams.sim().sim.stats().products.by_key["family-box"], 3, "no request while open");
    assert_eq!(app.breaker("product").await, ("closed".to_owned(), 1), "the key's breaker, not the upstream's");
    let metrics = app.metrics().await;
    let timeouts = sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", "timeout")]);
    assert_eq!(timeouts, 3.0, "each cut-off attempt is a timeout");
}

#[tokio::test]
async fn every_series_a_dashboard_or_alert_reads_exists_at_zero_from_start_up() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let metrics = app.metrics().await;
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(series(&metrics, name, labels), Some(0.0), "{name}{labels:?} at 0 in:\n{metrics}");
    };
    let outcomes = [
        "success",
        "not_found",
        "server_error",
        "timeout",
        "connect_error",
        "invalid_response",
        "rejected_open",
        "rejected_bulkhead",
    ];
    let transitions = [("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")];
    for upstream in ["user", "product"] {
        for outcome in outcomes {
            zero("upstream_requests_total", &[("upstream", upstream), ("outcome", outcome)]);
        }
        zero("upstream_retries_total", &[("upstream", upstream)]);
        zero("upstream_not_found_remembered_total", &[("upstream", upstream)]);
        for (from, to) in transitions {
            let labels = [("upstream", upstream), ("from", from), ("to", to)];
            zero("circuit_breaker_transitions_total", &labels);
            zero("circuit_breaker_key_transitions_total", &labels);
        }
        zero("circuit_breaker_keys_open", &[("upstream", upstream)]);
        zero("circuit_breaker_state", &[("upstream", upstream), ("state", "open")]);
        zero("upstream_request_duration_seconds_count", &[("upstream", upstream)]);
    }
    zero("orders_created_total", &[]);
    for reason in ["unknown-product", "circuit-open", "upstream-error", "deadline-exceeded", "bulkhead-full"] {
        zero("orders_failed_total", &[("reason", reason)]);
    }
}

#[tokio::test]
async fn an_unknown_product_once_answered_costs_neither_upstream_again() {
    let upstreams = Upstreams::healthy().await;
    let (_, products) = upstreams.mocks();
    // The 404 comes a moment late, so the first order's user lookup has been answered by then.
    Mock::given(method("GET"))
        .and(path("/products/ghost-box"))
        .respond_with(ResponseTemplate::new(404).set_delay(Duration::from_millis(50)))
        .mount(products)
        .await;
    let app =
        TestApp::builder(Backend::Sqlite).upstreams(upstreams).env("PRODUCT_NOT_FOUND_TTL_MS", "60000").spawn().await;
    let unknown_product = |response| async move {
        let (status, body) = problem(response).await;
        assert_eq!((status, body["type"].as_str()), (422, Some("/problems/unknown-product")));
    };
    let (users, products) = app.upstreams.mocks();

    unknown_product(app.post_order(ADA, "ghost-box").await).await;
    assert_eq!((requests_to(users).await, requests_to(products).await), (1, 1));
    for _ in 0..10 {
        unknown_product(app.post_order(ADA, "ghost-box").await).await;
    }
    assert_eq!((requests_to(users).await, requests_to(products).await), (1, 1), "answered from the remembered 404");

    unknown_product(app.post_order(ADA, "other-ghost").await).await;
    assert_eq!(requests_to(products).await, 2, "another code is still asked");
}
