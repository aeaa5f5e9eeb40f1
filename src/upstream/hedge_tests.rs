//! Hedging in the composed stack, on a paused clock, over an upstream that answers each call
//! as scripted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::StackConfig;
use crate::domain::{Lookup, Upstream, UpstreamError};
use crate::upstream::breaker::BreakerHandle;
use crate::upstream::stack::compose;
use crate::upstream::stack::tests::config as stack_config;
use crate::upstream::{UpstreamClient, UpstreamRequest};

const MS: Duration = Duration::from_millis(1);

type Step = (Duration, Result<Option<u32>, UpstreamError>);

/// The upstream: call n answers the n-th scripted step (then the last one again); counts calls,
/// and records whether any call was dropped before it answered (cancelled).
struct Upstreamish {
    client: UpstreamClient<u32>,
    breakers: BreakerHandle,
    calls: Arc<AtomicU32>,
    cancelled: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn scripted(steps: Vec<Step>, config: StackConfig) -> Upstreamish {
    let calls = Arc::new(AtomicU32::new(0));
    let cancelled = Arc::new(AtomicBool::new(false));
    let script = Arc::new(Mutex::new(VecDeque::from(steps)));
    let (counter, flag) = (Arc::clone(&calls), Arc::clone(&cancelled));
    let inner = tower::service_fn(move |_: UpstreamRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        let (delay, answer) = {
            let mut script = script.lock().expect("script");
            if script.len() > 1 { script.pop_front() } else { script.front().cloned() }.expect("a step")
        };
        let flag = DropFlag(Arc::clone(&flag));
        async move {
            tokio::time::sleep(delay).await;
            std::mem::forget(flag);
            answer
        }
    });
    let (client, breakers) = compose(inner, Upstream::Product, &config);
    Upstreamish { client, breakers, calls, cancelled }
}

/// `n` quick good answers (10 ms) that teach the estimator what normal is, then `rest`.
fn after_normal(n: usize, rest: Vec<Step>) -> Vec<Step> {
    let mut steps: Vec<Step> = (0..n).map(|_| (10 * MS, Ok(Some(1)))).collect();
    steps.extend(rest);
    steps
}

async fn warm_up(u: &Upstreamish, n: u32) {
    for _ in 0..n {
        assert_eq!(u.client.fetch("classic-box", Instant::now() + Duration::from_secs(2)).await, Ok(Some(1)));
    }
    u.cancelled.store(false, Ordering::SeqCst);
}

fn in_two_seconds() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_hedged_the_hedge_answers_and_the_slow_one_is_cancelled() {
    let slow_then_fast = vec![(Duration::from_secs(60), Ok(Some(2))), (10 * MS, Ok(Some(3)))];
    let u = scripted(after_normal(20, slow_then_fast), stack_config());
    warm_up(&u, 20).await;
    let started = Instant::now();
    assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(3)), "the hedge's answer");
    assert_eq!(started.elapsed(), 60 * MS, "hedged at the 50 ms floor (p95 is 10 ms), answered 10 ms later");
    assert_eq!(u.calls.load(Ordering::SeqCst), 22);
    assert!(u.cancelled.load(Ordering::SeqCst), "the slow attempt was dropped, not awaited");
}

#[tokio::test(start_paused = true)]
async fn the_hedge_delay_follows_the_upstreams_recent_p95() {
    let mut config = stack_config();
    config.hedge.min_delay = MS;
    // The slow one first: once 16 answers are known, a 300 ms answer would itself be hedged.
    let normal: Vec<Step> = (0..20).map(|i| (if i == 0 { 300 * MS } else { 100 * MS }, Ok(Some(1)))).collect();
    let mut steps = normal;
    steps.extend([(Duration::from_secs(60), Ok(Some(2))), (10 * MS, Ok(Some(3)))]);
    let u = scripted(steps, config);
    warm_up(&u, 20).await;
    let started = Instant::now();
    assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(3)));
    assert_eq!(started.elapsed(), 110 * MS, "p95 of 19 × 100 ms and 1 × 300 ms is 100 ms");
}

#[tokio::test(start_paused = true)]
async fn cancelled_losers_are_no_failures_for_the_breakers() {
    let mut steps = after_normal(20, vec![]);
    for _ in 0..10 {
        steps.extend([(Duration::from_secs(60), Ok(Some(2))), (10 * MS, Ok(Some(3)))]);
    }
    let u = scripted(steps, stack_config());
    warm_up(&u, 20).await;
    for _ in 0..10 {
        assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(3)));
    }
    let status = u.breakers.status();
    assert_eq!((status.keys_open, status.state.as_str()), (0, "closed"), "ten cancelled attempts judged nothing");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_retry_budget_is_spent() {
    let mut config = stack_config();
    config.retry_budget_percent = 0;
    config.retry_budget_min_per_sec = 0;
    let u = scripted(after_normal(20, vec![(300 * MS, Ok(Some(2)))]), config);
    warm_up(&u, 20).await;
    let started = Instant::now();
    assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(2)), "the slow answer, waited for");
    assert_eq!((started.elapsed(), u.calls.load(Ordering::SeqCst)), (300 * MS, 21));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_before_the_upstream_has_answered_enough_to_know_what_slow_is() {
    let u = scripted(vec![(300 * MS, Ok(Some(2)))], stack_config());
    for _ in 0..3 {
        assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(2)));
    }
    assert_eq!(u.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_deadline_leaves_less_than_the_hedge_delay() {
    let u = scripted(after_normal(20, vec![(Duration::from_secs(60), Ok(Some(2)))]), stack_config());
    warm_up(&u, 20).await;
    let result = u.client.fetch("classic-box", Instant::now() + 90 * MS).await;
    assert_eq!(result, Err(UpstreamError::DeadlineExceeded));
    assert_eq!(u.calls.load(Ordering::SeqCst), 21, "at 50 ms only 40 ms were left: no hedge");
}

#[tokio::test(start_paused = true)]
async fn hedging_can_be_turned_off() {
    let mut config = stack_config();
    config.hedge.percentile = 0;
    let u = scripted(after_normal(20, vec![(300 * MS, Ok(Some(2)))]), config);
    warm_up(&u, 20).await;
    assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(2)));
    assert_eq!(u.calls.load(Ordering::SeqCst), 21);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_leaves_the_first_attempt_to_answer() {
    let rest = vec![(300 * MS, Ok(Some(2))), (10 * MS, Err(UpstreamError::ServerError(503)))];
    let u = scripted(after_normal(20, rest), stack_config());
    warm_up(&u, 20).await;
    let started = Instant::now();
    assert_eq!(u.client.fetch("classic-box", in_two_seconds()).await, Ok(Some(2)));
    assert_eq!(started.elapsed(), 300 * MS);
    assert!(!u.cancelled.load(Ordering::SeqCst));
}
