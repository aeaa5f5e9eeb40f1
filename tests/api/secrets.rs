//! No secret leaves the process: a password in DATABASE_URL never shows in logs, readiness or
//! problem bodies.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::kit::{Backend, TestDb, Upstreams, binary, free_port, wait_ready};

const SECRET: &str = "pw-3a9f1c-do-not-log";

#[tokio::test]
async fn a_database_password_never_appears_in_logs_or_answers() {
    let db = TestDb::new(Backend::Postgres).await;
    // The test PostgreSQL trusts local connections, so the password is carried but unused.
    let url = db.url.replace("postgres@", &format!("postgres:{SECRET}@"));
    let upstreams = Upstreams::simulator().await;
    let port = free_port();
    let mut child = binary(port, &url, &upstreams)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("order-service starts");
    // Drained while the child runs: debug logging can exceed a pipe's buffer.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let mut answers = String::new();
    let order = |product: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = serde_json::json!({"user_id": "7c11e1ce2741", "product_code": product});
            http.post(format!("{base}/v1/orders")).json(&body).send().await.expect("order").text().await.expect("body")
        }
    };
    answers.push_str(&order("classic-box").await);
    answers.push_str(&order("veggie-box").await);
    answers
        .push_str(&http.get(format!("{base}/health/ready")).send().await.expect("ready").text().await.expect("body"));
    answers.push_str(&http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("body"));
    assert!(answers.contains("Ada Lovelace"), "the service worked: {answers}");

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let logs = stdout.join().expect("stdout") + &stderr.join().expect("stderr");
    assert!(logs.contains("order-service listening"), "logs were captured");
    assert!(!logs.contains(SECRET), "the password leaked into the logs");
    assert!(!answers.contains(SECRET), "the password leaked into an answer");
}
