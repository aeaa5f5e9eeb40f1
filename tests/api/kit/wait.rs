//! Waiting for what happens asynchronously (a gauge, a row, a state) without timing assertions.

use std::time::Duration;

/// Probes until `done` holds of what `probe` returns or `within` has passed, and returns the last
/// value: the caller asserts on it, so a bound reached fails with what it saw. The bound only
/// costs time when the test fails, so make it generous (a busy machine is slow, not wrong).
pub async fn eventually<T>(within: Duration, mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let every = (within / 100).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(every).await;
    }
}
