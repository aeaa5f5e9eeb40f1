//! Whatever a client sends, every error it gets is problem+json: invalid UTF-8 in the path,
//! unparsable queries and bodies, unknown methods and paths, oversized bodies, bad headers —
//! never axum's or a library's plain-text (or empty) rejection.

use serde_json::Value;

use crate::kit::{Backend, RawConnection, RawResponse, TestApp};

/// Whether `response` is a problem with `status` and the slug `slug`; why not, if it is not.
fn check_problem(response: &RawResponse, status: u16, slug: &str, what: &str) -> Result<(), String> {
    let shown = || format!("{what}: {}{}", response.head, String::from_utf8_lossy(&response.body));
    if response.status != status || response.header("content-type") != Some("application/problem+json") {
        return Err(shown());
    }
    let problem: Value = serde_json::from_slice(&response.body).map_err(|_| shown())?;
    let well_formed = problem["type"] == format!("/problems/{slug}")
        && problem["status"] == status
        && problem["title"].is_string()
        && problem["detail"].is_string();
    if well_formed { Ok(()) } else { Err(shown()) }
}

fn assert_problem(response: &RawResponse, status: u16, slug: &str, what: &str) {
    if let Err(why) = check_problem(response, status, slug, what) {
        panic!("expected a {status} {slug} problem: {why}");
    }
}

/// A request with a body: `head` is the request line without its version, then any headers.
fn with_body(head: impl AsRef<[u8]>, body: &[u8]) -> Vec<u8> {
    let head = head.as_ref();
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
    let mut request = head[..line_end].to_vec();
    request.extend_from_slice(b" HTTP/1.1");
    request.extend_from_slice(&head[line_end..]);
    request.extend_from_slice(format!("\r\nHost: test\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn an_order_id_that_is_not_utf8_is_a_404_problem() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let mut client = RawConnection::open(&app).await;
    for path in ["/v1/orders/%FF%FE", "/v1/orders/%C3%28", "/v1/orders/ok%80"] {
        let response = client.send(&format!("GET {path} HTTP/1.1")).await;
        assert_problem(&response, 404, "not-found", path);
    }
    // The OpenAPI document says so.
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    let missing = &doc["paths"]["/v1/orders/{id}"]["get"]["responses"]["404"];
    assert!(missing["content"]["application/problem+json"].is_object(), "{missing}");
}

#[tokio::test]
async fn every_rejection_on_the_api_port_is_a_problem() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_BODY_LIMIT_BYTES", "1024").spawn().await;
    let json = "Content-Type: application/json";
    let big = vec![b' '; 4096];
    let mut chunked = b"POST /v1/orders HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n1000\r\n"
        .to_vec();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        // Path and routing.
        ("unknown path", with_body("GET /nope", b""), 404, "not-found"),
        ("invalid UTF-8 in an order id", with_body("GET /v1/orders/%FF%FE", b""), 404, "not-found"),
        ("trailing slash", with_body("GET /v1/orders/", b""), 404, "not-found"),
        ("an id with an encoded slash", with_body("GET /v1/orders/a%2Fb", b""), 404, "not-found"),
        ("invalid UTF-8 outside every route", with_body("GET /%FF", b""), 404, "not-found"),
        ("method not allowed", with_body("DELETE /v1/orders", b""), 405, "method-not-allowed"),
        ("invented method", with_body("BREW /v1/orders/x", b""), 405, "method-not-allowed"),
        ("POST on health", with_body("POST /health/live", b""), 405, "method-not-allowed"),
        ("POST on metrics", with_body("POST /metrics", b""), 405, "method-not-allowed"),
        ("PUT on the OpenAPI document", with_body("PUT /openapi.json", b""), 405, "method-not-allowed"),
        // Query strings.
        ("non-numeric limit", with_body("GET /v1/orders?limit=abc", b""), 400, "malformed-request"),
        ("invalid UTF-8 in the query", with_body("GET /v1/orders?user_id=%FF%FE", b""), 422, "invalid-input"),
        ("a huge limit", with_body("GET /v1/orders?limit=99999999999999999999999", b""), 400, "malformed-request"),
        // Bodies.
        ("no content type", with_body("POST /v1/orders", b"{}"), 415, "unsupported-media-type"),
        (
            "content type not UTF-8",
            with_body(b"POST /v1/orders\r\nContent-Type: \xff", b"{}"),
            415,
            "unsupported-media-type",
        ),
        (
            "body not UTF-8",
            with_body(format!("POST /v1/orders\r\n{json}"), b"{\"user_id\": \"\xff\"}"),
            400,
            "malformed-request",
        ),
        ("body not JSON", with_body(format!("POST /v1/orders\r\n{json}"), b"{nope"), 400, "malformed-request"),
        ("body too large", with_body(format!("POST /v1/orders\r\n{json}"), &big), 413, "payload-too-large"),
        ("chunked body too large", chunked, 413, "payload-too-large"),
        ("legacy path, body too large", with_body(format!("POST /v1/order\r\n{json}"), &big), 413, "payload-too-large"),
        // Headers.
        (
            "Idempotency-Key not UTF-8",
            with_body(b"POST /v1/orders\r\nContent-Type: application/json\r\nIdempotency-Key: \xfe\xff", b"{}"),
            400,
            "malformed-request",
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, status, slug) in cases {
        // A fresh connection each: the service may close one after an error.
        let response = RawConnection::open(&app).await.send_bytes(&request).await;
        if let Err(why) = check_problem(&response, status, slug, what) {
            failures.push(format!("expected {status} {slug}, got {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[tokio::test]
async fn every_rejection_on_the_metrics_address_is_a_problem() {
    let app = TestApp::builder(Backend::Sqlite).env("METRICS_ADDR", "127.0.0.1:0").spawn().await;
    let addr = app.metrics_addr.expect("a metrics address");
    let cases = [("POST /metrics", 405, "method-not-allowed"), ("GET /nope", 404, "not-found")];
    for (line, status, slug) in cases {
        let response = RawConnection::to(addr).await.send(&format!("{line} HTTP/1.1")).await;
        assert_problem(&response, status, slug, line);
    }
}
