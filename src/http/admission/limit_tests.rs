//! The limit on the paused clock: it refuses at once when full, comes down when answers slow,
//! and is back at its ceiling soon after they speed up again, whichever algorithm moves it.

use std::sync::Mutex;
use std::time::Duration;

use super::*;

const CEILING: usize = 128;
const FLOOR: usize = 8;
/// An answer while the service is healthy…
const HEALTHY: Duration = Duration::from_millis(2);
/// …and during a flood: slower than AIMD's timeout too, so every algorithm sees it.
const FLOODED: Duration = Duration::from_millis(1_200);

fn limit(algorithm: LimitAlgorithm) -> (AdaptiveLimit, Arc<Mutex<Vec<usize>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let config = LimitConfig { algorithm, min: FLOOR, max: CEILING };
    let on_change: OnChange = Box::new(move |limit| record.lock().expect("lock").push(limit));
    (AdaptiveLimit::new(&config, on_change), seen)
}

/// Closed-loop clients without end: every place in the limit is taken, each answer takes
/// `rtt`, then they are all given back answered.
async fn round(limit: &AdaptiveLimit, rtt: Duration, is_error: bool) {
    let permits: Vec<_> = std::iter::from_fn(|| limit.try_acquire()).collect();
    assert_eq!(permits.len(), limit.current(), "a round fills the limit exactly");
    tokio::time::advance(rtt).await;
    for permit in permits {
        permit.answered(is_error);
    }
}

#[test]
fn a_fixed_limit_refuses_at_once_when_full_and_frees_on_drop() {
    let limit = AdaptiveLimit::fixed(2);
    let held: Vec<_> = std::iter::from_fn(|| limit.try_acquire()).take(3).collect();
    assert_eq!(held.len(), 2);
    assert!(!limit.has_room());
    drop(held);
    assert_eq!((limit.in_flight(), limit.current()), (0, 2));
    assert!(limit.has_room());
}

#[tokio::test(start_paused = true)]
async fn a_fixed_limit_never_moves() {
    let (limit, seen) = limit(LimitAlgorithm::Fixed);
    for _ in 0..10 {
        round(&limit, FLOODED, true).await;
    }
    assert_eq!(limit.current(), CEILING);
    assert_eq!(*seen.lock().expect("lock"), vec![CEILING], "only the starting value");
}

#[tokio::test(start_paused = true)]
async fn each_algorithm_comes_down_in_a_flood_and_is_back_at_the_ceiling_within_two_seconds_after_it() {
    for algorithm in [LimitAlgorithm::Gradient2, LimitAlgorithm::Vegas, LimitAlgorithm::Aimd] {
        let (limit, seen) = limit(algorithm);
        for _ in 0..20 {
            round(&limit, HEALTHY, false).await;
        }
        assert!(limit.current() >= CEILING * 9 / 10, "{algorithm:?}: healthy answers keep it high");

        let mut lowest = limit.current();
        for _ in 0..20 {
            round(&limit, FLOODED, true).await;
            lowest = lowest.min(limit.current());
        }
        assert!(lowest <= CEILING / 2, "{algorithm:?}: a flood brings it down (lowest {lowest})");
        assert!(lowest >= FLOOR, "{algorithm:?}: never under the floor");

        let flood_over = tokio::time::Instant::now();
        while limit.current() < CEILING * 9 / 10 && flood_over.elapsed() < Duration::from_secs(60) {
            round(&limit, HEALTHY, false).await;
        }
        let recovered_in = flood_over.elapsed();
        assert!(
            recovered_in <= Duration::from_secs(2),
            "{algorithm:?}: back to {} of {CEILING} after {recovered_in:?} of healthy answers",
            limit.current()
        );
        assert_eq!(seen.lock().expect("lock").last(), Some(&limit.current()), "the gauge follows");
    }
}

#[tokio::test(start_paused = true)]
async fn abandoned_requests_are_no_sample() {
    let (limit, _) = limit(LimitAlgorithm::Aimd);
    for _ in 0..5 {
        let permits: Vec<_> = std::iter::from_fn(|| limit.try_acquire()).collect();
        tokio::time::advance(FLOODED).await;
        drop(permits); // the clients went away: their time says nothing about the service
    }
    assert_eq!(limit.current(), CEILING);
    assert_eq!(limit.in_flight(), 0, "but their places are given back");
}
