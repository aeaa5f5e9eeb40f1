//! Client input never becomes a metric label: invented methods, unknown paths and odd
//! request ids sent over real sockets leave `/metrics` with the same small label set.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp};

/// The methods a metric may name; anything else is `other`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other"];

/// One HTTP/1.1 keep-alive connection, read response by response.
pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

impl RawConnection {
    pub async fn open(app: &TestApp) -> Self {
        Self { stream: BufReader::new(TcpStream::connect(app.addr).await.expect("connect")) }
    }

    /// Sends `head` (request line and headers, without the blank line) with an empty body;
    /// returns the status and the response's head.
    pub async fn send(&mut self, head: &str) -> (u16, String) {
        let request = format!("{head}\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await.expect("write");
        tokio::time::timeout(Duration::from_secs(10), self.read_response()).await.expect("an answer in time")
    }

    async fn read_response(&mut self) -> (u16, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).await.expect("read");
            assert!(n > 0, "connection closed after: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("body");
        (status, head)
    }
}

/// Every value of `label` across the samples of `metric`.
fn label_values(metrics: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let prefix = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric}_bucket{{")))
        .filter_map(|l| l.split_once(&prefix).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v.to_owned()))
        .collect()
}

#[tokio::test]
async fn invented_methods_and_paths_leave_the_metric_labels_bounded() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let mut client = RawConnection::open(&app).await;
    let pad = "X".repeat(2048);
    for i in 0..200 {
        let path = if i % 2 == 0 { "/v1/orders".to_owned() } else { format!("/invented/{i}/{pad}") };
        let (status, _) = client.send(&format!("INVENTED{i}{pad} {path} HTTP/1.1")).await;
        assert!(status == 405 || status == 404, "request {i}: {status}");
    }
    // Standard methods on unknown paths and on a known path that refuses them.
    let (status, _) = client.send("DELETE /v1/orders HTTP/1.1").await;
    assert_eq!(status, 405);
    let (status, _) = client.send("GET /no/such/thing HTTP/1.1").await;
    assert_eq!(status, 404);

    let metrics = app.metrics().await;
    assert!(!metrics.contains("INVENTED"), "an invented method reached /metrics");
    assert!(!metrics.contains("/invented/"), "a raw path reached /metrics");
    assert!(metrics.len() < 64 * 1024, "/metrics grew to {} bytes", metrics.len());
    for metric in ["http_server_requests_total", "http_server_request_duration_seconds"] {
        let methods = label_values(&metrics, metric, "method");
        assert!(methods.iter().all(|m| METHODS.contains(&m.as_str())), "{metric} methods: {methods:?}");
        assert!(methods.contains("other") && methods.contains("DELETE"), "{metric} methods: {methods:?}");
        let routes = label_values(&metrics, metric, "route");
        let known = ["/v1/orders", "/v1/order", "/v1/orders/{id}", "/health/live", "/health/ready", "/openapi.json"];
        let allowed = |r: &str| known.contains(&r) || r == "/metrics" || r == "unmatched";
        assert!(routes.iter().all(|r| allowed(r)), "{metric} routes: {routes:?}");
        assert!(routes.contains("/v1/orders") && routes.contains("unmatched"), "{metric} routes: {routes:?}");
    }
    let statuses = label_values(&metrics, "http_server_requests_total", "status");
    assert_eq!(statuses, BTreeSet::from(["404".to_owned(), "405".to_owned()]), "{metrics}");
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
