//! Graceful shutdown: readiness turns false first, accepted requests all finish, then it stops.

use std::time::Duration;

use crate::kit::{ADA, Backend, TestApp, eventually};

#[tokio::test]
async fn requests_accepted_before_shutdown_all_complete() {
    let mut app = TestApp::builder(Backend::Postgres).spawn().await;
    let in_flight: Vec<_> = (0..8).map(|_| app.post_order_in_background(ADA, "classic-box")).collect();
    let sim = std::sync::Arc::clone(&app.upstreams.sim().sim);
    eventually(Duration::from_secs(5), async || sim.stats().users.total, |&n| n >= 8).await;
    assert_eq!(sim.stats().users.total, 8, "all eight orders are being served");

    app.begin_shutdown();
    let mut statuses = Vec::new();
    for request in in_flight {
        statuses.push(request.await.expect("task").expect("accepted requests get an answer").status().as_u16());
    }
    assert_eq!(statuses, vec![201; 8]);
    app.stopped().await.expect("clean exit");
    assert_eq!(app.db.count("orders").await, 8);
    let after = reqwest::Client::new().get(app.url("/health/live")).send().await;
    assert!(after.is_err_and(|e| e.is_connect()), "the listener is closed");
}

#[tokio::test]
async fn readiness_turns_false_at_once_while_requests_are_still_served() {
    let mut app = TestApp::builder(Backend::Sqlite).env("SHUTDOWN_DELAY_MS", "1500").spawn().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    app.begin_shutdown();
    let unready = async || {
        let ready = app.get("/health/ready").await;
        if ready.status() == 503 { ready.json().await.expect("json") } else { serde_json::Value::Null }
    };
    let body = eventually(Duration::from_secs(1), unready, |body| !body.is_null()).await;
    assert_eq!(body["status"], "draining");
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "still serving during the delay");
    app.stopped().await.expect("clean exit");
}
