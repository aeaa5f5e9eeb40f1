//! The resilience stack end to end: breakers per key and per upstream, retry budget, bulkhead,
//! cancellation and recovery. Assertions count upstream calls and read states, never clocks.

use std::time::Duration;

use serde_json::Value;
use upstream_sim::{Catalogue, SimConfig};
use wiremock::matchers::any;
use wiremock::{Mock, ResponseTemplate};

use crate::kit::{ADA, Backend, TestApp, Upstreams, eventually, free_port, problem, requests_to, sample};

#[tokio::test]
async fn one_bad_product_opens_only_its_own_breaker() {
    let app = TestApp::builder(Backend::Sqlite).env("PRODUCT_BREAKER_OPEN_MS", "60000").spawn().await;

    let (status, _) = problem(app.post_order(ADA, "veggie-box").await).await;
    assert_eq!(status, 502, "three failed attempts");
    let response = app.post_order(ADA, "veggie-box").await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    let (status, body) = problem(response).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/circuit-open")), "opened at the 5th failure");
    assert!((1..=60).contains(&retry_after), "Retry-After is the remaining open time: {retry_after}");

    for _ in 0..5 {
        let (status, _) = problem(app.post_order(ADA, "veggie-box").await).await;
        assert_eq!(status, 503);
        assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "other keys keep flowing");
    }
    assert_eq!(app.upstreams.sim().sim.stats().products.by_key["veggie-box"], 5, "no request while open");
    assert_eq!(app.breaker("product").await, ("closed".to_owned(), 1));
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "circuit_breaker_keys_open", &[("upstream", "product")]), 1.0);
    assert!(
        sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", "rejected_open")]) >= 6.0
    );
}

#[tokio::test]
async fn refused_connections_open_the_upstream_breaker_and_it_recovers_by_itself() {
    let port = free_port();
    let app = TestApp::builder(Backend::Sqlite)
        .env("PRODUCT_SERVICE_URL", &format!("http://127.0.0.1:{port}"))
        .env("PRODUCT_BREAKER_MIN_CALLS", "5")
        .env("PRODUCT_BREAKER_OPEN_MS", "500")
        .spawn()
        .await;

    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = app.post_order(ADA, "classic-box").await;
        statuses.push(problem(response).await.1["type"].as_str().unwrap_or_default().to_owned());
    }
    let opened_at = statuses.iter().position(|t| t == "/problems/circuit-open").expect("breaker opened");
    assert!(opened_at <= 3, "opened within a handful of orders: {statuses:?}");
    assert!(statuses[opened_at..].iter().all(|t| t == "/problems/circuit-open"), "{statuses:?}");
    assert_eq!(app.breaker("product").await, ("open".to_owned(), 0), "refusals are not one key's fault");
    let metrics = app.metrics().await;
    let attempts =
        sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", "connect_error")]);
    assert!(attempts <= 1.2 * 20.0, "{attempts} attempts for 20 orders");
    assert!(sample(&metrics, "circuit_breaker_transitions_total", &[("upstream", "product"), ("to", "open")]) >= 1.0);

    // The upstream comes back on the same port; after the open wait one probe closes it.
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = SimConfig { products_addr: addr, ..SimConfig::ephemeral() };
    let _product_service = upstream_sim::spawn(config).await.expect("upstream back");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    assert_eq!(app.breaker("product").await.0, "closed");
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "circuit_breaker_state", &[("upstream", "product"), ("state", "closed")]), 1.0);
}

#[tokio::test]
async fn failures_across_many_keys_open_the_upstream_within_the_retry_budget() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(upstreams.mocks().1).await;
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("PRODUCT_RETRY_BUDGET_MIN_PER_SEC", "0")
        .env("PRODUCT_BREAKER_MIN_CALLS", "10")
        .env("PRODUCT_BREAKER_OPEN_MS", "60000")
        .spawn()
        .await;

    let orders = 40;
    let mut types = Vec::new();
    for i in 0..orders {
        let (_, body) = problem(app.post_order(ADA, &format!("product-{i}")).await).await;
        types.push(body["type"].as_str().unwrap_or_default().to_owned());
    }
    let (_, products) = app.upstreams.mocks();
    let attempts = requests_to(products).await;
    assert!(attempts as f64 <= 1.2 * f64::from(orders) + 1.0, "{attempts} attempts for {orders} orders");
    assert!(types.contains(&"/problems/retry-budget-exhausted".to_owned()), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("/problems/circuit-open"), "{types:?}");
    assert_eq!(app.breaker("product").await.0, "open", "failure spread across many keys");
}

#[tokio::test]
async fn a_slow_upstream_trips_the_slow_call_threshold() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    upstreams.mount_classic_box(Duration::from_millis(300)).await;
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("PRODUCT_BREAKER_SLOW_CALL_MS", "200")
        .env("PRODUCT_BREAKER_KEY_MIN_CALLS", "3")
        .env("PRODUCT_BREAKER_MIN_CALLS", "3")
        .env("PRODUCT_BREAKER_OPEN_MS", "60000")
        // The open breaker is the subject: no earlier answer may stand in for it.
        .env("PRODUCT_STALE_IF_ERROR_MS", "0")
        .spawn()
        .await;

    for _ in 0..3 {
        assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "slow but successful");
    }
    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/circuit-open")));
    let (_, products) = app.upstreams.mocks();
    assert_eq!(requests_to(products).await, 3);
    assert_eq!(app.breaker("product").await.0, "open");
}

#[tokio::test]
async fn a_definitive_failure_cancels_the_other_lookup_without_blaming_its_upstream() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let (status, body) = problem(app.post_order("000000000000", "family-box").await).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/unknown-user")));

    let sim = &app.upstreams.sim().sim;
    eventually(Duration::from_secs(5), async || sim.stats().in_flight, |&n| n == 0).await;
    assert_eq!(sim.stats().in_flight, 0, "the 60 s product lookup was abandoned, its connection closed");
    assert_eq!(app.breaker("product").await, ("closed".to_owned(), 0));
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", "timeout")]), 0.0);
}

/// Starts a family-box order (it hangs until the deadline) and returns once its product call
/// has reached the simulator, so the caller knows a product call and a request are in flight.
async fn hold_a_family_box_order(app: &TestApp) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let hanging = app.post_order_in_background(ADA, "family-box");
    let sim = &app.upstreams.sim().sim;
    eventually(Duration::from_secs(1), async || sim.stats().products.total, |&n| n > 0).await;
    hanging
}

#[tokio::test]
async fn a_full_bulkhead_refuses_at_once() {
    let app = TestApp::builder(Backend::Sqlite)
        .env("PRODUCT_MAX_CONCURRENT", "1")
        .env("ORDER_DEADLINE_MS", "1500")
        .spawn()
        .await;
    let hanging = hold_a_family_box_order(&app).await;
    let response = app.post_order(ADA, "classic-box").await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = problem(response).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/bulkhead-full")));
    assert_eq!(app.upstreams.sim().sim.stats().products.by_key.get("classic-box"), None, "refused without a request");
    let hung = hanging.await.expect("task").expect("response");
    assert_eq!(hung.status(), 504);
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "upstream_requests_total", &[("upstream", "product"), ("outcome", "rejected_bulkhead")]),
        1.0
    );
}

/// All six use cases at once for a few seconds: Ada's classic-box orders keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_does_not_sink_ada_and_the_classic_box() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let run_for = Duration::from_secs(5);
    let mut workers = Vec::new();
    for user in [ADA, "e6f24d7d1c7e"] {
        for product in ["classic-box", "family-box", "veggie-box"] {
            for _ in 0..2 {
                let (http, url) = (app.http.clone(), app.url("/v1/orders"));
                workers.push(tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let mut statuses = Vec::new();
                    while started.elapsed() < run_for {
                        let body = serde_json::json!({"user_id": user, "product_code": product});
                        let response = http.post(&url).json(&body).send().await.expect("response");
                        statuses.push(response.status().as_u16());
                    }
                    (user, product, statuses)
                }));
            }
        }
    }
    let mut ada_classic = Vec::new();
    for worker in workers {
        let (user, product, statuses) = worker.await.expect("worker");
        if (user, product) == (ADA, "classic-box") {
            ada_classic.extend(statuses);
        }
    }
    let ok = ada_classic.iter().filter(|s| **s == 201).count();
    assert!(ada_classic.len() >= 10, "enough orders to judge: {}", ada_classic.len());
    assert!(ok as f64 >= 0.99 * ada_classic.len() as f64, "{ok} of {} succeeded: {ada_classic:?}", ada_classic.len());
    let (state, keys_open) = app.breaker("product").await;
    assert_eq!(state, "closed", "two bad products never open the whole upstream");
    assert!(keys_open >= 1, "the bad products have their own open breakers");
    let ready: Value = app.ready().await;
    assert_eq!(ready["status"], "ready", "open breakers never make the service unready");
}

#[tokio::test]
async fn a_custom_catalogue_key_is_served_by_the_simulator() {
    // The simulator reads its table from data; a user's file works the same way.
    let catalogue = Catalogue::parse(
        r#"{"users":[{"key":"u1","body":{"id":"u1","firstName":"Grace","lastName":"Hopper"}}],
            "products":[{"key":"p1","body":{"code":"p1","name":"Tea","price":2.5}}]}"#,
    )
    .expect("catalogue");
    let sim = upstream_sim::spawn(SimConfig { catalogue, ..SimConfig::ephemeral() }).await.expect("sim");
    let app = TestApp::builder(Backend::Sqlite).upstreams(Upstreams::Simulator(sim)).spawn().await;
    let order: Value = app.post_order("u1", "p1").await.json().await.expect("json");
    assert_eq!(
        (order["customer_fullname"].as_str(), order["total_amount"].as_f64()),
        (Some("Grace Hopper"), Some(2.5))
    );
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_shed_but_probes_are_not() {
    let app =
        TestApp::builder(Backend::Sqlite).env("HTTP_MAX_IN_FLIGHT", "1").env("ORDER_DEADLINE_MS", "1500").spawn().await;
    let hanging = hold_a_family_box_order(&app).await;
    let response = app.post_order(ADA, "classic-box").await;
    assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let (status, body) = problem(response).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/load-shed")));
    assert_eq!(app.get("/health/ready").await.status(), 200, "probes are never shed");
    assert_eq!(app.get("/v1/orders").await.status(), 200, "reads have a limit of their own");
    assert_eq!(hanging.await.expect("task").expect("response").status(), 504);
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "capacity is back");
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "http_server_requests_total", &[("route", "/v1/orders"), ("status", "503")]), 1.0);
}

/// `chaos/outage user` is in force when the admin API answers: the order right after it cannot
/// reach the user-service over the connection the one before it pooled.
#[tokio::test]
async fn an_injected_outage_holds_for_the_very_next_order() {
    // The outage is the subject: the first order's answer may not stand in for the second's.
    let app = TestApp::builder(Backend::Sqlite).env("USER_STALE_IF_ERROR_MS", "0").spawn().await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "pools a keep-alive connection");
    let fault = serde_json::json!({"upstream": "user", "fault": {"type": "outage"}});
    let admin = app.upstreams.sim().admin_url();
    let injected = app.http.post(format!("{admin}/__admin/faults")).json(&fault).send().await.expect("admin");
    assert_eq!(injected.status(), 201);
    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["detail"].as_str()), (502, Some("user-service: connection failed")), "{body}");
}
