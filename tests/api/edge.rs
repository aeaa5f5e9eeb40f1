//! What the edge refuses to let a client hold: a request head or body that never finishes
//! arriving (slowloris); and `/metrics` on an address of its own.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::{Backend, TestApp, problem};

/// Reads until the server closes the connection (bounded, so a broken server fails the test
/// instead of hanging it); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept a slow connection open: {}", String::from_utf8_lossy(&received));
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut_off() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_HEADER_READ_TIMEOUT_MS", "300").spawn().await;
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nX-Slow: a").await.expect("partial head");
    // Trickle a byte now and then, well inside any per-read timeout, never ending the head.
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    trickle.await;
    let rest = read_until_closed(&mut slow).await;
    assert!(!rest.contains("201"), "{rest}");

    // Everyone else is served as usual, also after the slow client.
    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.post_order("7c11e1ce2741", "classic-box").await.status(), 201);
}

#[tokio::test]
async fn a_body_that_never_finishes_is_a_408_and_no_order() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_BODY_READ_TIMEOUT_MS", "300").spawn().await;
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    let head = "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n";
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(b"{\"user_id\": \"7c11e1ce2741\",").await.expect("half a body");
    let answer = read_until_closed(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    assert_eq!(app.db.count("orders").await, 0);
}

#[tokio::test]
async fn metrics_can_live_on_an_address_of_their_own() {
    let app = TestApp::builder(Backend::Sqlite).env("METRICS_ADDR", "127.0.0.1:0").spawn().await;
    assert_eq!(app.post_order("7c11e1ce2741", "classic-box").await.status(), 201);

    let (status, _) = problem(app.get("/metrics").await).await;
    assert_eq!(status, 404, "not on the API port any more");
    let metrics_addr = app.metrics_addr.expect("a metrics address");
    assert_ne!(metrics_addr.port(), app.addr.port());
    let metrics = app.http.get(format!("http://{metrics_addr}/metrics")).send().await.expect("scrape");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("orders_created_total"), "{text}");
    let other = app.http.get(format!("http://{metrics_addr}/v1/orders")).send().await.expect("request");
    assert_eq!(other.status(), 404, "the metrics address serves nothing else");
}
