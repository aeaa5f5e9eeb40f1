//! Waiting for what happens asynchronously (a gauge, a row, a state) without timing assertions.

use std::time::Duration;

/// Probes about a hundred times within `within` until `done` holds of what `probe` returns, and
/// returns the last value: the caller asserts on it, so a bound reached fails with what it saw.
pub async fn eventually<T>(within: Duration, mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let every = (within / 100).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(every).await;
    }
}
