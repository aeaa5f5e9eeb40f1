//! How long one upstream's good answers take lately: the last [`CAPACITY`] good answers of the
//! last [`MAX_AGE`], and a percentile of them, which is when a lookup counts as slow enough to
//! hedge (the Tail at Scale's "defer a secondary request until the first has been outstanding
//! longer than the 95th-percentile expected latency"). Hand-written because it is 80 lines: a
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
/// An estimate is reused until this many samples have come in since…
pub const REFRESH_SAMPLES: usize = 8;
/// …or this long has passed: selecting a percentile of 128 samples per lookup was 4 % of an
/// order's instructions (callgrind, docs/overload.md, seventh session), and a p95 of the last
/// 128 answers moves little in 8 more.
pub const REFRESH_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct LatencyWindow {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<(Instant, Duration)>,
    /// Samples recorded since `estimate` was made.
    recorded: usize,
    estimate: Option<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    percentile: u32,
    made: Instant,
    value: Option<Duration>,
}

impl LatencyWindow {
    /// A good answer (200 or 404) took `elapsed`, ending at `now`.
    pub fn record(&self, elapsed: Duration, now: Instant) {
        let mut inner = self.lock();
        if inner.samples.len() == CAPACITY {
            inner.samples.pop_front();
        }
        inner.samples.push_back((now, elapsed));
        inner.recorded += 1;
    }

    /// The `percentile` (1–99) of the recent samples, nearest rank; `None` with too few. Once
    /// the window is full, an estimate is made again only after [`REFRESH_SAMPLES`] samples or
    /// [`REFRESH_AFTER`]; before, every call makes it (a p95 of 16 samples is their slowest, and
    /// one slow first answer must not stand for the next 8 lookups).
    pub fn percentile(&self, percentile: u32, now: Instant) -> Option<Duration> {
        let mut inner = self.lock();
        if let Some(estimate) = inner.estimate
            && inner.samples.len() == CAPACITY
            && estimate.percentile == percentile
            && inner.recorded < REFRESH_SAMPLES
            && now.saturating_duration_since(estimate.made) < REFRESH_AFTER
        {
            return estimate.value;
        }
        let value = inner.select(percentile, now);
        inner.estimate = Some(Estimate { percentile, made: now, value });
        inner.recorded = 0;
        value
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn select(&mut self, percentile: u32, now: Instant) -> Option<Duration> {
        while self.samples.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > MAX_AGE) {
            self.samples.pop_front();
        }
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        // Copied onto the stack: no allocation, and the samples keep their order.
        let mut copy = [Duration::ZERO; CAPACITY];
        let count = self.samples.len();
        for (slot, (_, elapsed)) in copy.iter_mut().zip(self.samples.iter()) {
            *slot = *elapsed;
        }
        let sorted = &mut copy[..count];
        let rank = (count * percentile.clamp(1, 99) as usize).div_ceil(100);
        let (_, nth, _) = sorted.select_nth_unstable(rank.saturating_sub(1));
        Some(*nth)
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
    fn an_estimate_is_reused_until_enough_samples_or_time_have_passed() {
        let now = Instant::now();
        let full = || window((0..CAPACITY).map(|_| 100), now);
        let w = full();
        assert_eq!(w.percentile(95, now), Some(100 * MS));
        for _ in 0..REFRESH_SAMPLES - 1 {
            w.record(900 * MS, now);
        }
        assert_eq!(w.percentile(95, now), Some(100 * MS), "reused, though 7 of the last 128 are slow now");
        w.record(900 * MS, now);
        assert_eq!(w.percentile(95, now), Some(900 * MS), "made again after REFRESH_SAMPLES new samples");
        assert_eq!(w.percentile(50, now), Some(100 * MS), "another percentile is made afresh");

        let w = full();
        assert_eq!(w.percentile(95, now), Some(100 * MS));
        for _ in 0..REFRESH_SAMPLES - 1 {
            w.record(900 * MS, now);
        }
        assert_eq!(w.percentile(95, now + REFRESH_AFTER), Some(900 * MS), "made again after REFRESH_AFTER");
    }

    #[test]
    fn an_estimate_is_made_on_every_call_until_the_window_is_full() {
        let now = Instant::now();
        let w = window((0..16).map(|_| 100), now);
        assert_eq!(w.percentile(95, now), Some(100 * MS));
        w.record(900 * MS, now);
        assert_eq!(w.percentile(95, now), Some(900 * MS), "the 17th sample counts at once: rank 17 of 17");
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
