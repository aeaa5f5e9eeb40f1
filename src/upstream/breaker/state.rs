//! One circuit breaker as a pure state machine: every method takes `now`, nothing sleeps.
//!
//! Why our own: tower-resilience 0.13 keeps its state machine crate-private and on the wall
//! clock, so it cannot be held per key in a bounded map, tested on a paused clock, or asked for
//! the remaining open time that `Retry-After` reports.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::config::BreakerConfig;
pub use crate::ops::BreakerMode as Mode;

/// Buckets in the sliding window; the window slides by `window / BUCKETS`.
const BUCKETS: usize = 10;

/// When rejected while half-open with every probe slot taken: a probe answers within one
/// attempt timeout, so this is a fair "come back soon".
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateName {
    Closed,
    Open,
    HalfOpen,
}

impl StateName {
    pub const ALL: [StateName; 3] = [StateName::Closed, StateName::Open, StateName::HalfOpen];
    /// The `state` label values, in the order of [`StateName::ALL`].
    pub const LABELS: [&'static str; 3] = ["closed", "open", "half_open"];

    /// The `state` / `from` / `to` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Closed => "closed",
            StateName::Open => "open",
            StateName::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: StateName,
    pub to: StateName,
}

impl Transition {
    /// Every transition a breaker makes; their counters are registered at zero. Open → closed
    /// happens only when an operator forces a breaker closed or hands it back to `auto`.
    pub const ALL: [Transition; 5] = [
        Transition { from: StateName::Closed, to: StateName::Open },
        Transition { from: StateName::Open, to: StateName::HalfOpen },
        Transition { from: StateName::HalfOpen, to: StateName::Closed },
        Transition { from: StateName::HalfOpen, to: StateName::Open },
        Transition { from: StateName::Open, to: StateName::Closed },
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `cycle` tells this half-open period's probes from late answers of an earlier one.
    HalfOpen {
        cycle: u64,
        in_flight: u32,
    },
}

/// Whether a call may go through; a probe must later be `record`ed or `release`d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted { probe: Option<u64> },
    Rejected { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Modes (see [`Mode`]): `ForcedOpen` refuses everything and `ForcedClosed` admits everything,
/// both recording nothing; leaving a forced mode, or entering one, starts the state machine
/// afresh (closed, empty window), so no verdict from before an operator's decision outlives it.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    mode: Mode,
    state: State,
    cycles: u64,
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            mode: Mode::Auto,
            state: State::Closed,
            cycles: 0,
            origin: now,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// What the breaker does now: a forced breaker reads as the state it imitates.
    pub fn state(&self) -> StateName {
        match self.mode {
            Mode::ForcedOpen => return StateName::Open,
            Mode::ForcedClosed => return StateName::Closed,
            Mode::Auto => {}
        }
        match self.state {
            State::Closed => StateName::Closed,
            State::Open { .. } => StateName::Open,
            State::HalfOpen { .. } => StateName::HalfOpen,
        }
    }

    /// Brings the state up to `now`: an open breaker whose wait is over turns half-open. Called
    /// by `admit` and by whoever reports the state, so an idle breaker never reads "open" forever.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Open { until } if now >= until && self.mode == Mode::Auto => {
                self.cycles += 1;
                self.go(State::HalfOpen { cycle: self.cycles, in_flight: 0 })
            }
            _ => None,
        }
    }

    /// Asks to make a call (after [`Breaker::tick`], so a due open breaker admits probes).
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.mode {
            // No end to wait for: the open wait is a fair "come back later".
            Mode::ForcedOpen => return (Admission::Rejected { retry_after: self.config.open_wait }, None),
            Mode::ForcedClosed => return (Admission::Admitted { probe: None }, None),
            Mode::Auto => {}
        }
        let transition = self.tick(now);
        if let State::Open { until } = self.state {
            return (Admission::Rejected { retry_after: until - now }, None);
        }
        let admission = match &mut self.state {
            State::Closed => Admission::Admitted { probe: None },
            State::HalfOpen { cycle, in_flight } if *in_flight < self.config.half_open_probes => {
                *in_flight += 1;
                Admission::Admitted { probe: Some(*cycle) }
            }
            _ => Admission::Rejected { retry_after: HALF_OPEN_RETRY_AFTER },
        };
        (admission, transition)
    }

    /// Whether `admit` would refuse because the breaker is open and still waiting, and for how
    /// long; changes nothing (no transition, no probe slot taken).
    pub fn refuses(&self, now: Instant) -> Option<Duration> {
        match self.mode {
            Mode::ForcedOpen => return Some(self.config.open_wait),
            Mode::ForcedClosed => return None,
            Mode::Auto => {}
        }
        match self.state {
            State::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    /// Records a finished call. While half-open, one good probe closes the breaker and one bad
    /// (failed or slow) probe opens it again.
    pub fn record(&mut self, probe: Option<u64>, failure: bool, elapsed: Duration, now: Instant) -> Option<Transition> {
        if self.mode != Mode::Auto {
            return None;
        }
        let slow = elapsed >= self.config.slow_call;
        match (self.state, probe) {
            (State::Closed, None) => {
                self.sample(now, failure, slow);
                self.tripped(now).then(|| self.open(now)).flatten()
            }
            (State::HalfOpen { cycle, .. }, Some(probe)) if probe == cycle => {
                if failure || slow {
                    self.open(now)
                } else {
                    self.close()
                }
            }
            // A late answer from an earlier state: it says nothing about the current one.
            _ => None,
        }
    }

    /// A call that ended without a verdict (cancelled, or refused locally): frees its probe slot.
    pub fn release(&mut self, probe: Option<u64>) {
        if let (State::HalfOpen { cycle, in_flight }, Some(probe)) = (&mut self.state, probe)
            && *cycle == probe
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Hands the breaker to `mode`. Any change starts the state machine afresh (closed, empty
    /// window, earlier probes ignored); the transition is what the breaker now does differently.
    pub fn set_mode(&mut self, mode: Mode) -> Option<Transition> {
        if mode == self.mode {
            return None;
        }
        let from = self.state();
        self.mode = mode;
        self.cycles += 1;
        self.buckets = [Bucket::default(); BUCKETS];
        self.state = State::Closed;
        let to = self.state();
        let transition = (from != to).then_some(Transition { from, to });
        debug_assert!(transition.is_none_or(|t| Transition::ALL.contains(&t)), "{transition:?} is not registered");
        transition
    }

    /// New thresholds for the next calls; the state is kept. A new window length forgets the
    /// calls counted so far (their buckets would no longer line up).
    pub fn reconfigure(&mut self, config: BreakerConfig, now: Instant) {
        if config.window != self.config.window {
            self.buckets = [Bucket::default(); BUCKETS];
            self.origin = now;
        }
        self.config = config;
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        self.go(State::Open { until: now + self.config.open_wait })
    }

    fn close(&mut self) -> Option<Transition> {
        self.buckets = [Bucket::default(); BUCKETS];
        self.go(State::Closed)
    }

    fn go(&mut self, to: State) -> Option<Transition> {
        let from = self.state();
        self.state = to;
        let to = self.state();
        let transition = (from != to).then_some(Transition { from, to });
        debug_assert!(transition.is_none_or(|t| Transition::ALL.contains(&t)), "{transition:?} is not registered");
        transition
    }

    fn bucket_index(&self, now: Instant) -> u64 {
        let width = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.origin).as_nanos() / width.as_nanos()) as u64
    }

    fn sample(&mut self, now: Instant, failure: bool, slow: bool) {
        let index = self.bucket_index(now);
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index != index || bucket.calls == 0 {
            *bucket = Bucket { index, ..Bucket::default() };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(failure);
        bucket.slow += u32::from(slow);
    }

    /// Calls, failures and slow calls of the last `window`.
    fn totals(&self, now: Instant) -> (u32, u32, u32) {
        let current = self.bucket_index(now);
        self.buckets
            .iter()
            .filter(|b| b.calls > 0 && b.index <= current && current - b.index < BUCKETS as u64)
            .fold((0, 0, 0), |(c, f, s), b| (c + b.calls, f + b.failures, s + b.slow))
    }

    fn tripped(&self, now: Instant) -> bool {
        let (calls, failures, slow) = self.totals(now);
        let rate = |n: u32| f64::from(n) / f64::from(calls.max(1));
        calls >= self.config.min_calls
            && (rate(failures) >= self.config.failure_rate || rate(slow) >= self.config.slow_rate)
    }

    /// Nothing in the window and closed: the breaker can be forgotten without losing anything.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.mode == Mode::Auto && self.state == State::Closed && self.totals(now).0 == 0
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
