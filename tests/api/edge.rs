//! What the edge refuses to let a client hold: a request head or body that never finishes
//! arriving (slowloris); and `/metrics` on an address of its own.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::kit::{Backend, TestApp, problem, read_until_closed, unfinished_body, unfinished_head};

/// What the server sent before it closed the connection (bounded, so a broken server fails the
/// test instead of hanging it).
async fn sent_before_close(stream: &mut TcpStream) -> String {
    let received = read_until_closed(stream, Duration::from_secs(20)).await;
    String::from_utf8_lossy(&received.expect("the server closed the slow connection")).into_owned()
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut_off() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_HEADER_READ_TIMEOUT_MS", "300").spawn().await;
    let mut slow = unfinished_head(app.addr).await;
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
    let rest = sent_before_close(&mut slow).await;
    assert!(!rest.contains("201"), "{rest}");

    // Everyone else is served as usual, also after the slow client.
    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.post_order("7c11e1ce2741", "classic-box").await.status(), 201);
}

#[tokio::test]
async fn a_body_that_never_finishes_is_a_408_and_no_order() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_BODY_READ_TIMEOUT_MS", "300").spawn().await;
    let mut slow = unfinished_body(app.addr, b"{\"user_id\": \"7c11e1ce2741\",").await;
    let answer = sent_before_close(&mut slow).await;
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
