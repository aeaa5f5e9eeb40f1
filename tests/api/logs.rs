//! The real binary logs one JSON line per request with the fields operators search by.

use std::time::Duration;

use serde_json::Value;

use crate::kit::{Backend, TestBinary};

#[tokio::test]
async fn each_request_logs_one_json_line_with_id_route_status_and_latency() {
    let service = TestBinary::new(Backend::Sqlite).await.env("RUST_LOG", "info");
    let mut running = service.start().await;
    let http = &service.http;
    let created = http
        .post(service.url("/v1/orders"))
        .header("x-request-id", "log-test-1")
        .json(&serde_json::json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"}))
        .send()
        .await
        .expect("order");
    assert_eq!(created.status(), 201);
    let missing = http
        .get(service.url(&format!("/v1/orders/{}", uuid::Uuid::now_v7())))
        .header("x-request-id", "log-test-2")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);

    running.sigterm();
    let status = running.exit_status(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM drains and exits 0: {status}");
    let stdout = running.output().stdout;
    let lines: Vec<&str> = stdout.lines().collect();

    let parsed: Vec<Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let request_line = |id: &str| {
        parsed
            .iter()
            .find(|v| v["span"]["request_id"] == id && v["status"].is_number())
            .unwrap_or_else(|| panic!("no request line for {id} in {lines:#?}"))
            .clone()
    };
    let created = request_line("log-test-1");
    assert_eq!(created["span"]["route"], "/v1/orders");
    assert_eq!(created["span"]["method"], "POST");
    assert_eq!(created["status"], 201);
    assert!(created["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(created["timestamp"].is_string() && created["level"] == "INFO");
    let missing = request_line("log-test-2");
    assert_eq!(missing["span"]["route"], "/v1/orders/{id}", "the matched route, never the raw path");
    assert_eq!(missing["status"], 404);
}
