//! The operator controls on `ADMIN_ADDR`: breakers read and forced, settings reloaded from the
//! environment file (or on SIGHUP) without dropping a request; none of it on the public port.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, ResponseTemplate};

use crate::kit::{ADA, Backend, TestApp, TestBinary, Upstreams, eventually, free_port, problem, requests_to, sample};

/// An environment file of the test's own, removed when dropped.
struct EnvFile(PathBuf);

impl EnvFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("order-service-{name}-{}.env", std::process::id()));
        std::fs::write(&path, text).expect("write env file");
        Self(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("write env file");
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn with_admin(upstreams: Upstreams) -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .upstreams(upstreams)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("PRODUCT_STALE_IF_ERROR_MS", "0")
        .spawn()
        .await
}

#[tokio::test]
async fn a_breaker_forced_open_refuses_the_next_order_without_asking_either_upstream() {
    let app = with_admin(Upstreams::healthy().await).await;
    let breaker = app.force_breaker("product", "forced_open").await;
    assert_eq!(breaker, json!({"state": "open", "mode": "forced_open", "open_keys": []}));

    let response = app.post_order(ADA, "classic-box").await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = problem(response).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/circuit-open")));
    assert_eq!(app.upstreams.received().await, 0, "no request to either upstream");

    let ready = app.ready().await;
    let product = ready["breakers"].as_array().expect("breakers").iter().find(|b| b["upstream"] == "product").cloned();
    assert_eq!(product, Some(json!({"upstream": "product", "state": "open", "mode": "forced_open", "keys_open": 0})));
    let metrics = app.http.get(app.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let mode = |mode| sample(&metrics, "circuit_breaker_mode", &[("upstream", "product"), ("mode", mode)]);
    assert_eq!((mode("forced_open"), mode("auto")), (1.0, 0.0));
    let changes = [("upstream", "product"), ("mode", "forced_open")];
    assert_eq!(sample(&metrics, "circuit_breaker_mode_changes_total", &changes), 1.0);
    assert_eq!(sample(&metrics, "circuit_breaker_state", &[("upstream", "product"), ("state", "open")]), 1.0);
}

#[tokio::test]
async fn forced_closed_during_an_outage_lets_requests_through_and_auto_hands_back_to_the_thresholds() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(upstreams.mocks().1).await;
    let app = with_admin(upstreams).await;
    let (_, products) = app.upstreams.mocks();

    // Five failed attempts open the Classic Box's own breaker.
    let mut types = Vec::new();
    for _ in 0..3 {
        types.push(problem(app.post_order(ADA, "classic-box").await).await.1["type"].clone());
    }
    assert_eq!(types.last(), Some(&json!("/problems/circuit-open")), "{types:?}");
    let listed: Value =
        app.http.get(app.admin_url("/admin/breakers")).send().await.expect("get").json().await.expect("json");
    assert_eq!(listed["product"], json!({"state": "closed", "mode": "auto", "open_keys": ["classic-box"]}));
    assert_eq!(listed["user"], json!({"state": "closed", "mode": "auto", "open_keys": []}));

    let breaker = app.force_breaker("product", "forced_closed").await;
    assert_eq!(breaker, json!({"state": "closed", "mode": "forced_closed", "open_keys": []}));
    let before = requests_to(products).await;
    for _ in 0..5 {
        let (status, _) = problem(app.post_order(ADA, "classic-box").await).await;
        assert_eq!(status, 502, "reached the failing upstream");
    }
    assert_eq!(requests_to(products).await, before + 15, "every attempt of every order reached it");

    let breaker = app.force_breaker("product", "auto").await;
    assert_eq!(breaker, json!({"state": "closed", "mode": "auto", "open_keys": []}));
    let mut types = Vec::new();
    for _ in 0..3 {
        types.push(problem(app.post_order(ADA, "classic-box").await).await.1["type"].clone());
    }
    assert_eq!(types.last(), Some(&json!("/problems/circuit-open")), "the thresholds judge again: {types:?}");
}

#[tokio::test]
async fn an_unknown_upstream_or_mode_is_refused() {
    let app = with_admin(Upstreams::healthy().await).await;
    let put = |upstream: &str, body: Value| {
        app.http.put(app.admin_url(&format!("/admin/breakers/{upstream}"))).json(&body).send()
    };
    let (status, _) = problem(put("stock", json!({"mode": "auto"})).await.expect("put")).await;
    assert_eq!(status, 404);
    let (status, body) = problem(put("product", json!({"mode": "open"})).await.expect("put")).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("mode")));
}

#[tokio::test]
async fn the_admin_api_and_metrics_are_absent_from_the_public_port() {
    let app = with_admin(Upstreams::healthy().await).await;
    for path in ["/admin/breakers", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 404, "{path} on the public port");
        let on_admin = app.http.get(app.admin_url(path)).send().await.expect("admin");
        assert_eq!(on_admin.status(), 200, "{path} on ADMIN_ADDR");
    }
    let reload = app.http.post(app.url("/admin/reload")).send().await.expect("post");
    assert_eq!(reload.status(), 404);
}

#[tokio::test]
async fn a_reload_changes_a_timeout_for_the_next_order_and_the_one_in_flight_completes() {
    let env = EnvFile::new("reload", "PRODUCT_ATTEMPT_TIMEOUT_MS=800\n");
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(Upstreams::answering_after(Duration::from_millis(300)).await)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("ORDER_SERVICE_ENV_FILE", env.path())
        .env("PRODUCT_MAX_ATTEMPTS", "1")
        .env("PRODUCT_STALE_IF_ERROR_MS", "0")
        .spawn()
        .await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "300 ms is within 800 ms");

    let in_flight = app.post_order_in_background(ADA, "classic-box");
    let (_, products) = app.upstreams.mocks();
    eventually(Duration::from_secs(5), async || requests_to(products).await, |&n| n == 2).await;
    env.write("PRODUCT_ATTEMPT_TIMEOUT_MS=100\nHTTP_ADDR=127.0.0.1:1\n");
    let reloaded = app.http.post(app.admin_url("/admin/reload")).send().await.expect("reload");
    assert_eq!(reloaded.status(), 200);
    let report: Value = reloaded.json().await.expect("json");
    assert_eq!(report["changed"], json!([{"variable": "PRODUCT_ATTEMPT_TIMEOUT_MS", "from": "800", "to": "100"}]));
    assert_eq!(report["restart_required"], json!(["HTTP_ADDR"]));
    assert_eq!(
        in_flight.await.expect("task").expect("answer").status(),
        201,
        "finished on the settings it started with"
    );

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (504, Some("/problems/upstream-timeout")), "100 ms now");

    env.write("PRODUCT_ATTEMPT_TIMEOUT_MS=soon\n");
    let refused = app.http.post(app.admin_url("/admin/reload")).send().await.expect("reload");
    let (status, body) = problem(refused).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/invalid-settings")));
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("PRODUCT_ATTEMPT_TIMEOUT_MS")), "{body}");
    let (status, _) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!(status, 504, "the settings in force were kept");

    let metrics = app.http.get(app.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert_eq!(sample(&metrics, "config_reloads_total", &[("result", "applied")]), 1.0);
    assert_eq!(sample(&metrics, "config_reloads_total", &[("result", "invalid")]), 1.0);
}

#[tokio::test]
async fn sighup_reloads_the_environment_file() {
    let env = EnvFile::new("sighup", "PRODUCT_HEDGE_PERCENTILE=95\n");
    let admin = format!("127.0.0.1:{}", free_port());
    let binary = TestBinary::new(Backend::Sqlite)
        .await
        .env("ORDER_SERVICE_ENV_FILE", env.path())
        .env("ADMIN_ADDR", admin.clone());
    let running = binary.start().await;
    env.write("PRODUCT_HEDGE_PERCENTILE=0\n");
    running.sighup();
    let reloads = eventually(
        Duration::from_secs(10),
        async || {
            let text = binary.http.get(format!("http://{admin}/metrics")).send().await.ok()?.text().await.ok()?;
            Some(sample(&text, "config_reloads_total", &[("result", "applied")]))
        },
        |n| *n == Some(1.0),
    )
    .await;
    assert_eq!(reloads, Some(1.0), "SIGHUP did what POST /admin/reload does");
    assert_eq!(
        binary.http.get(binary.url("/health/live")).send().await.expect("live").status(),
        200,
        "and it lives on"
    );
}
