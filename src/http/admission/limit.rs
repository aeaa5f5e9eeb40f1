//! An in-flight limit that never queues, whose size follows measured latency.
//!
//! Why a type of our own around `tower-acc`'s algorithms: its `ConcurrencyLimit` service waits
//! in `poll_ready` for a permit (it queues); the edge must refuse at once, and must be able to
//! ask "is there room?" before it reads a body. So the algorithms (Gradient2, Vegas, AIMD) come
//! from the crate, and this holds the count: an atomic compare-and-swap to enter, and one
//! algorithm update per finished request to resize.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tower_acc::Algorithm;

use crate::config::{LimitAlgorithm, LimitConfig};

/// AIMD counts an answer slower than this as a loss (as it does a 5xx): well past a healthy
/// order (a few ms with fast upstreams, ≈ 300 ms with the fault table's), well inside the 2 s
/// deadline.
const AIMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The limit's current value goes here on every change (the `http_server_concurrency_limit`
/// gauge in the service; nothing in unit tests).
pub type OnChange = Box<dyn Fn(usize) + Send + Sync>;

/// At most [`current`](Self::current) requests in flight; a full limit refuses at once.
#[derive(Clone)]
pub struct AdaptiveLimit {
    shared: Arc<Shared>,
}

struct Shared {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    floor: usize,
    ceiling: usize,
    /// `None`: the limit is fixed at the ceiling.
    algorithm: Option<Mutex<Box<dyn Algorithm + Send>>>,
    on_change: OnChange,
}

impl fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("in_flight", &self.in_flight())
            .field("limit", &self.current())
            .field("adaptive", &self.shared.algorithm.is_some())
            .finish()
    }
}

impl AdaptiveLimit {
    /// A limit fixed at `max` (reads; writes with `HTTP_CONCURRENCY_ALGORITHM=fixed`).
    pub fn fixed(max: usize) -> Self {
        Self::build(max, max, None, Box::new(|_| {}))
    }

    /// The writes' limit: starts at the ceiling (`HTTP_MAX_IN_FLIGHT`) and moves between the
    /// floor and the ceiling as the configured algorithm says.
    pub fn new(config: &LimitConfig, on_change: OnChange) -> Self {
        let (floor, ceiling) = (config.min.min(config.max).max(1), config.max.max(1));
        let algorithm: Option<Box<dyn Algorithm + Send>> = match config.algorithm {
            LimitAlgorithm::Fixed => None,
            LimitAlgorithm::Gradient2 => Some(Box::new(
                tower_acc::Gradient2::builder().initial_limit(ceiling).min_limit(floor).max_limit(ceiling).build(),
            )),
            LimitAlgorithm::Vegas => {
                Some(Box::new(tower_acc::Vegas::builder().initial_limit(ceiling).max_limit(ceiling).build()))
            }
            LimitAlgorithm::Aimd => Some(Box::new(
                tower_acc::Aimd::builder()
                    .initial_limit(ceiling)
                    .min_limit(floor)
                    .max_limit(ceiling)
                    .timeout(AIMD_TIMEOUT)
                    .build(),
            )),
        };
        Self::build(floor, ceiling, algorithm.map(Mutex::new), on_change)
    }

    fn build(
        floor: usize,
        ceiling: usize,
        algorithm: Option<Mutex<Box<dyn Algorithm + Send>>>,
        on_change: OnChange,
    ) -> Self {
        on_change(ceiling);
        let shared = Shared {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(ceiling),
            floor,
            ceiling,
            algorithm,
            on_change,
        };
        Self { shared: Arc::new(shared) }
    }

    /// The limit now.
    pub fn current(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a permit is free now (it may be gone by the time one is asked for).
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.current()
    }

    /// A place in the limit, or `None` at once when it is full.
    pub fn try_acquire(&self) -> Option<LimitPermit> {
        let shared = &self.shared;
        let mut now = shared.in_flight.load(Ordering::Relaxed);
        loop {
            if now >= shared.limit.load(Ordering::Relaxed) {
                return None;
            }
            match shared.in_flight.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        Some(LimitPermit { shared: Arc::clone(shared), started: Instant::now(), outcome: Outcome::Abandoned })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Dropped before an answer (the client went away): no latency sample.
    Abandoned,
    Answered {
        is_error: bool,
    },
}

/// One request's place in an [`AdaptiveLimit`]; given back, with its latency as a sample for
/// the algorithm, when dropped.
pub struct LimitPermit {
    shared: Arc<Shared>,
    started: Instant,
    outcome: Outcome,
}

impl fmt::Debug for LimitPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitPermit").field("started", &self.started).field("outcome", &self.outcome).finish()
    }
}

impl LimitPermit {
    /// The request was answered; `is_error` for a failure of ours (a 5xx), which the
    /// loss-based algorithm (AIMD) reads as overload.
    pub fn answered(mut self, is_error: bool) {
        self.outcome = Outcome::Answered { is_error };
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        let shared = &self.shared;
        let in_flight = shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        let (Some(algorithm), Outcome::Answered { is_error }) = (&shared.algorithm, self.outcome) else {
            return;
        };
        let rtt = self.started.elapsed();
        // Under the lock, so the gauge sees the changes in the order they were made.
        let mut algorithm = algorithm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        algorithm.update(rtt, in_flight, is_error, false);
        let next = algorithm.max_concurrency().clamp(shared.floor, shared.ceiling);
        if shared.limit.swap(next, Ordering::Relaxed) != next {
            (shared.on_change)(next);
        }
    }
}

#[cfg(test)]
#[path = "limit_tests.rs"]
mod tests;
