//! The composed stack on a paused clock, over a scripted innermost service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::time::Instant;

use super::*;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::KeyedConfig;
use crate::domain::Lookup;
use crate::upstream::breaker::{BreakerConfig, StateName};

const MS: Duration = Duration::from_millis(1);

pub(crate) fn config() -> StackConfig {
    let breaker = |min_calls| BreakerConfig {
        window: Duration::from_secs(10),
        min_calls,
        failure_rate: 0.9,
        slow_call: 600 * MS,
        slow_rate: 0.8,
        open_wait: Duration::from_secs(5),
        half_open_probes: 2,
    };
    StackConfig {
        attempt_timeout: 800 * MS,
        max_attempts: 3,
        backoff: Backoff { base: 50 * MS, max: 1000 * MS },
        retry_budget_percent: 20,
        retry_budget_min_per_sec: 100,
        max_concurrent: 4,
        breaker: KeyedConfig { upstream: breaker(20), per_key: breaker(5), max_keys: 16, min_failing_keys: 3 },
        not_found_ttl: Duration::ZERO,
        not_found_max_keys: 16,
        hedge: crate::config::HedgeConfig { percentile: 95, min_delay: 50 * MS },
        stale_if_error: Duration::ZERO,
        stale_max_keys: 16,
    }
}

/// An upstream that answers `answer` after `delay`, counting calls.
fn scripted(
    delay: Duration,
    answer: Result<Option<u32>, UpstreamError>,
) -> (UpstreamClient<u32>, BreakerHandle, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = tower::service_fn(move |_: UpstreamRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            tokio::time::sleep(delay).await;
            answer
        }
    });
    let (client, breakers) = compose(inner, Upstream::Product, &config());
    (client, breakers, calls)
}

fn in_two_seconds() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_tried_three_times_then_reported() {
    let (client, _, calls) = scripted(200 * MS, Err(UpstreamError::ServerError(500)));
    let result = client.fetch("veggie-box", in_two_seconds()).await;
    assert_eq!(result, Err(UpstreamError::ServerError(500)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_404_is_asked_once() {
    let (client, breakers, calls) = scripted(MS, Ok(None));
    assert_eq!(client.fetch("nobody", in_two_seconds()).await, Ok(None));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(breakers.status().keys_open, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_upstream_ends_at_the_deadline_not_later() {
    let (client, _, calls) = scripted(Duration::from_secs(60), Ok(Some(1)));
    let started = Instant::now();
    let result = client.fetch("family-box", in_two_seconds()).await;
    assert_eq!(result, Err(UpstreamError::DeadlineExceeded));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(calls.load(Ordering::SeqCst) >= 2, "timed out at 800 ms, retried");
}

#[tokio::test(start_paused = true)]
async fn the_key_breaker_opens_after_five_failed_attempts_and_refuses_without_calling() {
    let (client, breakers, calls) = scripted(200 * MS, Err(UpstreamError::ServerError(500)));
    let _ = client.fetch("veggie-box", in_two_seconds()).await;
    let second = client.fetch("veggie-box", in_two_seconds()).await;
    assert!(matches!(second, Err(UpstreamError::CircuitOpen { .. })), "{second:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let third = client.fetch("veggie-box", in_two_seconds()).await;
    assert!(matches!(third, Err(UpstreamError::CircuitOpen { retry_after }) if retry_after <= Duration::from_secs(5)));
    assert_eq!(calls.load(Ordering::SeqCst), 5, "refused without a call");
    assert_eq!((breakers.status().state, breakers.status().keys_open), (StateName::Closed, 1));
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_refuses_the_call_over_its_limit_at_once() {
    let (client, _, calls) = scripted(500 * MS, Ok(Some(1)));
    let deadline = in_two_seconds();
    let held: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn({
                let client = client.clone();
                async move { client.fetch("classic-box", deadline).await }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::time::sleep(MS).await;
    assert_eq!(client.fetch("classic-box", deadline).await, Err(UpstreamError::BulkheadFull));
    for h in held {
        let _ = h.await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the refused call was never sent or retried");
}

#[tokio::test(start_paused = true)]
async fn with_no_traffic_the_status_reads_half_open_once_the_open_wait_is_over() {
    let (client, breakers, _) = scripted(MS, Err(UpstreamError::Connect("refused".into())));
    for i in 0..20 {
        let _ = client.fetch(&format!("key-{i}"), in_two_seconds()).await;
    }
    assert_eq!(breakers.status().state, StateName::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(breakers.status().state, StateName::HalfOpen, "read as it is now, not as it was last admitted");
}

#[tokio::test(start_paused = true)]
async fn attempts_cut_off_by_the_deadline_count_as_timeouts_and_open_the_key_breaker() {
    let (client, breakers, calls) = scripted(Duration::from_secs(60), Ok(Some(1)));
    for _ in 0..5 {
        // Shorter than the 800 ms attempt timeout: only the deadline ends these attempts.
        let result = client.fetch("family-box", Instant::now() + 700 * MS).await;
        assert_eq!(result, Err(UpstreamError::DeadlineExceeded));
    }
    let refused = client.fetch("family-box", Instant::now() + 700 * MS).await;
    assert!(matches!(refused, Err(UpstreamError::CircuitOpen { .. })), "{refused:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(breakers.status().keys_open, 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_dropped_before_the_deadline_say_nothing_about_health() {
    let (client, breakers, calls) = scripted(Duration::from_secs(60), Ok(Some(1)));
    for _ in 0..10 {
        // The order gave up for another reason (the other lookup failed, the client left).
        let dropped = tokio::time::timeout(100 * MS, client.fetch("family-box", in_two_seconds())).await;
        assert!(dropped.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(breakers.status().keys_open, 0, "no verdict from a cancelled attempt");
    assert_eq!(client.fetch("family-box", Instant::now() + 700 * MS).await, Err(UpstreamError::DeadlineExceeded));
}
