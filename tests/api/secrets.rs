//! No secret leaves the process: a password in DATABASE_URL never shows in logs, readiness or
//! problem bodies.

use std::time::Duration;

use crate::kit::{Backend, Output, TestBinary};

const SECRET: &str = "pw-3a9f1c-do-not-log";

#[tokio::test]
async fn a_database_password_never_appears_in_logs_or_answers() {
    let service = TestBinary::new(Backend::Postgres).await;
    // The test PostgreSQL trusts local connections, so the password is carried but unused.
    let url = service.db.url.replace("postgres@", &format!("postgres:{SECRET}@"));
    let service = service.env("DATABASE_URL", url).env("RUST_LOG", "debug");
    let mut running = service.start().await;
    let http = &service.http;
    let mut answers = String::new();
    let order = |product: &'static str| {
        let (http, url) = (http.clone(), service.url("/v1/orders"));
        async move {
            let body = serde_json::json!({"user_id": "7c11e1ce2741", "product_code": product});
            http.post(url).json(&body).send().await.expect("order").text().await.expect("body")
        }
    };
    answers.push_str(&order("classic-box").await);
    answers.push_str(&order("veggie-box").await);
    answers.push_str(&http.get(service.url("/health/ready")).send().await.expect("ready").text().await.expect("body"));
    answers.push_str(&http.get(service.url("/metrics")).send().await.expect("metrics").text().await.expect("body"));
    assert!(answers.contains("Ada Lovelace"), "the service worked: {answers}");

    running.sigterm();
    running.exit_status(Duration::from_secs(30)).await;
    let Output { stdout, stderr } = running.output();
    let logs = stdout + &stderr;
    assert!(logs.contains("order-service listening"), "logs were captured");
    assert!(!logs.contains(SECRET), "the password leaked into the logs");
    assert!(!answers.contains(SECRET), "the password leaked into an answer");
}
