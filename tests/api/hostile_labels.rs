//! Client input never becomes a metric label: invented methods, unknown paths and odd
//! request ids sent over real sockets leave `/metrics` with the same small label set.

use crate::kit::{Backend, RawConnection, TestApp, label_values};

/// The methods a metric may name; anything else is `other`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other"];

#[tokio::test]
async fn invented_methods_and_paths_leave_the_metric_labels_bounded() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let mut client = RawConnection::open(&app).await;
    let pad = "X".repeat(2048);
    for i in 0..200 {
        let path = if i % 2 == 0 { "/v1/orders".to_owned() } else { format!("/invented/{i}/{pad}") };
        let status = client.send(&format!("INVENTED{i}{pad} {path} HTTP/1.1")).await.status;
        assert!(status == 405 || status == 404, "request {i}: {status}");
    }
    // Standard methods on unknown paths and on a known path that refuses them.
    assert_eq!(client.send("DELETE /v1/orders HTTP/1.1").await.status, 405);
    assert_eq!(client.send("GET /no/such/thing HTTP/1.1").await.status, 404);

    // Every route of the service once, so each must have its own label (none `other`).
    for path in ["/v1/orders", "/v1/orders/x", "/health/live", "/health/ready", "/openapi.json", "/metrics"] {
        assert!(client.send(&format!("GET {path} HTTP/1.1")).await.status < 500, "{path}");
    }
    for path in ["/docs", "/docs/", "/docs/index.css"] {
        assert!(client.send(&format!("GET {path} HTTP/1.1")).await.status < 400, "{path}");
    }
    assert_eq!(client.send("POST /v1/order HTTP/1.1").await.status, 415);

    let metrics = app.metrics().await;
    assert!(!metrics.contains("INVENTED"), "an invented method reached /metrics");
    assert!(!metrics.contains("/invented/"), "a raw path reached /metrics");
    assert!(metrics.len() < 64 * 1024, "/metrics grew to {} bytes", metrics.len());
    for metric in ["http_server_requests_total", "http_server_request_duration_seconds"] {
        let methods = label_values(&metrics, metric, "method");
        assert!(methods.iter().all(|m| METHODS.contains(&m.as_str())), "{metric} methods: {methods:?}");
        assert!(methods.contains("other") && methods.contains("DELETE"), "{metric} methods: {methods:?}");
        let routes = label_values(&metrics, metric, "route");
        let expected = [
            "/v1/orders",
            "/v1/order",
            "/v1/orders/{id}",
            "/health/live",
            "/health/ready",
            "/openapi.json",
            "/metrics",
            "/docs",
            "/docs/",
            "/docs/{*file}",
            "unmatched",
        ];
        assert_eq!(routes, expected.iter().map(|r| (*r).to_owned()).collect(), "{metric} routes");
    }
    let statuses = label_values(&metrics, "http_server_requests_total", "status");
    assert!(statuses.iter().all(|s| s.len() == 3 && s.parse::<u16>().is_ok()), "statuses: {statuses:?}");
}

#[tokio::test]
async fn a_long_or_odd_request_id_is_replaced_not_echoed_or_forwarded() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let long = "r".repeat(8 * 1024);
    for sent in [long.as_str(), "two words", "caf\u{e9}"] {
        let response =
            app.http.get(app.url("/health/live")).header("x-request-id", sent).send().await.expect("request");
        let echoed = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
        assert_ne!(echoed, sent);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "a new id is made instead: {echoed}");
    }
    let kept = app.http.get(app.url("/health/live")).header("x-request-id", "Root=1-5759e988/bd862e3f+fe1be4").send();
    assert_eq!(kept.await.expect("request").headers()["x-request-id"], "Root=1-5759e988/bd862e3f+fe1be4");
}
