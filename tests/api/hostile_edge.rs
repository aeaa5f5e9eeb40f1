//! What hostile or broken clients cannot take from the edge: order capacity (slow bodies),
//! read capacity (a flood of writes), file handles (silent, idle or surplus connections), a
//! quick shutdown (idle connections), or the 413 of an oversized body (lingering close).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::{
    ADA, Backend, TestApp, TestBinary, eventually, problem, read_until_closed, sample, unfinished_body, unfinished_head,
};

const OPEN_CONNECTIONS: &str = "http_server_open_connections";
/// The HTTP/2 connection preface and an empty SETTINGS frame: an h2c client with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

async fn open_connections(app: &TestApp) -> f64 {
    sample(&app.metrics().await, OPEN_CONNECTIONS, &[])
}

/// Scrapes the gauge until `until` holds (at most 10 s: accepting and closing are asynchronous)
/// and returns the last value.
async fn open_connections_once(app: &TestApp, until: impl Fn(f64) -> bool) -> f64 {
    eventually(Duration::from_secs(10), || open_connections(app), |open| until(*open)).await
}

#[tokio::test]
async fn slow_request_bodies_hold_no_order_capacity() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_MAX_IN_FLIGHT", "4").spawn().await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(unfinished_body(app.addr, b"{\"user_id\": ").await);
    }
    // Give the server time to route the four heads (before the fix each took a permit here).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let created = app.post_order(ADA, "classic-box").await;
    assert_eq!(created.status(), 201, "a normal order is served while four bodies trickle in");
    assert_eq!(app.get("/v1/orders").await.status(), 200, "and so is a read");
    assert!(open_connections(&app).await >= 4.0, "the slow connections are still open");
    drop(slow);
}

#[tokio::test]
async fn reads_are_served_while_writes_are_shed() {
    let app = TestApp::builder(Backend::Sqlite)
        .env("HTTP_MAX_IN_FLIGHT", "2")
        // The family box hangs: keep its two orders in flight for the whole test.
        .env("ORDER_DEADLINE_MS", "30000")
        .env("IDEMPOTENCY_LEASE_MS", "60000")
        .env("PRODUCT_ATTEMPT_TIMEOUT_MS", "30000")
        .env("PRODUCT_MAX_ATTEMPTS", "1")
        .spawn()
        .await;
    let hanging: Vec<_> = (0..2).map(|_| app.post_order_in_background(ADA, "family-box")).collect();
    let sim = &app.upstreams.sim().sim;
    eventually(Duration::from_secs(5), async || sim.stats().products.total, |&n| n >= 2).await;
    assert_eq!(sim.stats().products.total, 2, "both hanging orders hold a write permit");

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/load-shed")), "writes are full");
    assert_eq!(app.get("/v1/orders").await.status(), 200, "reads have a limit of their own");
    assert_eq!(app.get("/health/ready").await.status(), 200, "health is never shed");
    for task in hanging {
        task.abort();
    }
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_first_byte_timeout_and_the_gauge_follows() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_FIRST_BYTE_TIMEOUT_MS", "400").spawn().await;
    let before = open_connections(&app).await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    let during = open_connections_once(&app, |open| open >= before + 5.0).await;
    assert!(during >= before + 5.0, "five silent connections are counted: {before} → {during}");

    for stream in &mut silent {
        let sent = read_until_closed(stream, Duration::from_secs(10)).await;
        assert_eq!(sent, Some(Vec::new()), "closed without a word");
    }
    drop(silent);
    let after = open_connections_once(&app, |open| open <= during - 5.0).await;
    assert!(after <= during - 5.0, "the gauge falls when they close: {during} → {after}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_IDLE_TIMEOUT_MS", "400").spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let sent = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("closed when idle");
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 200"), "answered first, then closed: {sent}");
}

#[tokio::test]
async fn idle_h2c_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_IDLE_TIMEOUT_MS", "400").spawn().await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let live = h2.get(app.url("/health/live")).send().await.expect("h2c request");
    assert_eq!((live.status().as_u16(), live.version()), (200, reqwest::Version::HTTP_2), "h2c is served");

    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(H2_PREFACE).await.expect("preface");
    let sent = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("closed when idle");
    assert_eq!(sent.get(3), Some(&4), "the server spoke HTTP/2 (a SETTINGS frame) before closing");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_unanswered() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_MAX_CONNECTIONS", "3").spawn().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut extra = TcpStream::connect(app.addr).await.expect("the kernel still completes the handshake");
    let _ = extra.write_all(request).await;
    let sent = read_until_closed(&mut extra, Duration::from_secs(10)).await.expect("closed");
    assert!(sent.is_empty(), "the fourth connection got no answer: {}", String::from_utf8_lossy(&sent));

    held[0].write_all(request).await.expect("request");
    let sent = read_until_closed(&mut held[0], Duration::from_secs(10)).await.expect("closed");
    assert!(String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 200"), "the three within the cap are served");
    drop(held);
    let live = async || reqwest::Client::new().get(app.url("/health/live")).send().await.ok().map(|r| r.status());
    let status = eventually(Duration::from_secs(10), live, Option::is_some).await;
    assert_eq!(status, Some(reqwest::StatusCode::OK), "room again once they have gone");
}

#[tokio::test]
async fn a_client_that_writes_a_whole_oversized_body_first_reads_its_413() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let body = vec![b' '; 3 * 1024 * 1024];
    for attempt in 0..10 {
        // A small send buffer, as over a real network: the client is still writing when the
        // server has answered, instead of the whole body fitting in loopback's socket buffers.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
        let mut stream = socket.connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        if let Err(error) = stream.write_all(&body).await {
            panic!("try {attempt}: the server reset the connection while the body was sent: {error}");
        }
        let sent = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("answered and closed");
        let sent = String::from_utf8_lossy(&sent);
        assert!(sent.starts_with("HTTP/1.1 413"), "try {attempt}: {sent}");
        assert!(sent.contains("/problems/payload-too-large"), "try {attempt}: {sent}");
    }
}

#[tokio::test]
async fn sigterm_does_not_wait_for_idle_or_silent_connections() {
    const DRAIN: Duration = Duration::from_secs(30);
    let service = TestBinary::new(Backend::Sqlite)
        .await
        .env("SHUTDOWN_DRAIN_TIMEOUT_MS", DRAIN.as_millis().to_string())
        .env("RUST_LOG", "info");
    let mut running = service.start().await;
    let port = service.port;

    let mut idle_h2 = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    idle_h2.write_all(H2_PREFACE).await.expect("preface");
    let mut settings = [0u8; 9];
    idle_h2.read_exact(&mut settings).await.expect("the server's SETTINGS");
    assert_eq!(settings[3], 4, "an HTTP/2 connection");
    let _partial = unfinished_head(("127.0.0.1", port)).await;
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    running.sigterm();
    let status = running.exit_status(DRAIN + Duration::from_secs(10)).await;
    let waited = signalled.elapsed();
    let log = running.output().stdout;
    assert!(status.success(), "SIGTERM drains and exits 0: {status}");
    assert!(!log.contains("drain timeout"), "no connection held the drain: {log}");
    assert!(waited < DRAIN, "it did not wait for the drain timeout ({waited:?})");
}
