//! The real `order-service` binary as a process: started on a port of its own, polled until
//! ready, stopped with a signal.

use super::Upstreams;

/// The real `order-service` binary on `port` over `database_url`, with `upstreams` (the
/// simulator) as user and product services; the caller adds variables and sets its output.
pub fn binary(port: u16, database_url: &str, upstreams: &Upstreams) -> std::process::Command {
    let sim = upstreams.sim();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"));
    command
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("USER_SERVICE_URL", sim.users_url())
        .env("PRODUCT_SERVICE_URL", sim.products_url());
    command
}

/// Polls `{base}/health/ready` until it answers 200 (at most 10 s).
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("order-service never became ready at {base}");
}
