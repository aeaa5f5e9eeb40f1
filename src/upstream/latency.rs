//! How long one upstream's good answers take lately: the last [`CAPACITY`] good answers of the
//! last [`MAX_AGE`], and a percentile of them, which is when a lookup counts as slow enough to
//! hedge (the Tail at Scale's "defer a secondary request until the first has been outstanding
//! longer than the 95th-percentile expected latency"). Hand-written because it is 40 lines: a
//! histogram crate would bring decaying buckets and a clock of its own to test around.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Samples kept: enough for a stable p95, few enough to copy per estimate.
pub const CAPACITY: usize = 128;
/// Older samples say little about the upstream now.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// With fewer recent samples there is no estimate: slow cannot be told from normal yet.
pub const MIN_SAMPLES: usize = 16;

#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: Mutex<VecDeque<(Instant, Duration)>>,
}

impl LatencyWindow {
    /// A good answer (200 or 404) took `elapsed`, ending at `now`.
    pub fn record(&self, elapsed: Duration, now: Instant) {
        let mut samples = self.lock();
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back((now, elapsed));
    }

    /// The `percentile` (1–99) of the recent samples, nearest rank; `None` with too few.
    pub fn percentile(&self, percentile: u32, now: Instant) -> Option<Duration> {
        let mut samples = self.lock();
        while samples.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > MAX_AGE) {
            samples.pop_front();
        }
        if samples.len() < MIN_SAMPLES {
            return None;
        }
        // Copied onto the stack (no allocation per lookup) and selected outside the lock.
        let mut copy = [Duration::ZERO; CAPACITY];
        let count = samples.len();
        for (slot, (_, elapsed)) in copy.iter_mut().zip(samples.iter()) {
            *slot = *elapsed;
        }
        drop(samples);
        let sorted = &mut copy[..count];
        let rank = (count * percentile.clamp(1, 99) as usize).div_ceil(100);
        let (_, nth, _) = sorted.select_nth_unstable(rank.saturating_sub(1));
        Some(*nth)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, Duration)>> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn window(latencies: impl IntoIterator<Item = u64>, now: Instant) -> LatencyWindow {
        let window = LatencyWindow::default();
        for ms in latencies {
            window.record(Duration::from_millis(ms), now);
        }
        window
    }

    #[test]
    fn no_estimate_before_enough_samples() {
        let now = Instant::now();
        assert_eq!(window(1..16, now).percentile(95, now), None);
        assert_eq!(window(1..=16, now).percentile(95, now), Some(16 * MS));
    }

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let now = Instant::now();
        let w = window((1..=100).rev(), now);
        assert_eq!(w.percentile(95, now), Some(95 * MS));
        assert_eq!(w.percentile(90, now), Some(90 * MS));
        assert_eq!(w.percentile(50, now), Some(50 * MS));
    }

    #[test]
    fn a_few_slow_answers_do_not_move_the_p95_of_many_fast_ones() {
        let now = Instant::now();
        let w = window((0..97).map(|_| 200).chain([1000, 1000, 1000]), now);
        assert_eq!(w.percentile(95, now), Some(200 * MS));
    }

    #[test]
    fn only_the_last_capacity_samples_count() {
        let now = Instant::now();
        let w = window((0..CAPACITY).map(|_| 900u64).chain((0..CAPACITY).map(|_| 100)), now);
        assert_eq!(w.percentile(99, now), Some(100 * MS), "the 900 ms era was pushed out");
    }

    #[test]
    fn old_samples_are_forgotten() {
        let start = Instant::now();
        let w = window((0..50).map(|_| 300), start);
        for _ in 0..20 {
            w.record(100 * MS, start + Duration::from_secs(20));
        }
        let later = start + MAX_AGE + Duration::from_secs(1);
        assert_eq!(w.percentile(95, later), Some(100 * MS), "the 300 ms samples are older than MAX_AGE");
        assert_eq!(w.percentile(95, start + Duration::from_secs(60)), None, "and then all of them");
    }
}
