//! The real binary logs one JSON line per request with the fields operators search by.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::kit::{Backend, TestDb, Upstreams, binary, free_port, wait_ready};

#[tokio::test]
async fn each_request_logs_one_json_line_with_id_route_status_and_latency() {
    let db = TestDb::new(Backend::Sqlite).await;
    let upstreams = Upstreams::simulator().await;
    let port = free_port();
    let mut child = binary(port, &db.url, &upstreams)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("order-service starts");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base).await;
    let created = http
        .post(format!("{base}/v1/orders"))
        .header("x-request-id", "log-test-1")
        .json(&serde_json::json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"}))
        .send()
        .await
        .expect("order");
    assert_eq!(created.status(), 201);
    let missing = http
        .get(format!("{base}/v1/orders/{}", uuid::Uuid::now_v7()))
        .header("x-request-id", "log-test-2")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().expect("exit");
    assert!(status.success(), "SIGTERM drains and exits 0: {status}");
    let lines = lines.join().expect("reader");

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
