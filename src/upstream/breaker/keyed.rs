//! One breaker for the whole upstream plus one per key, so one bad key cannot sink the rest.
//!
//! A key (user id, product code) that keeps failing opens its own breaker: its orders fail fast
//! while other keys flow. The upstream-wide breaker counts every success and slow call, but a
//! failure only when it is not confined to a few keys: connection errors always count (they
//! are never about one key); other failures count once `min_failing_keys` distinct keys are
//! failing in the window. So the fault table's two bad products never open it, and an outage
//! across many keys does. Keys get a breaker on their first failure or slow call only, so
//! healthy and unknown keys cost nothing; the map is bounded and forgets idle breakers first.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Admission, Breaker, StateName, Transition};
#[cfg(test)]
use crate::config::BreakerConfig;
pub use crate::config::KeyedConfig;

/// What the caller holds while its call is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    upstream_probe: Option<u64>,
    key_probe: Option<u64>,
}

/// A refusal: the breaker that refused and how long until it may admit again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
    pub by_key: bool,
}

/// State changes worth a metric or a log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub upstream: Option<Transition>,
    pub key: Option<Transition>,
}

/// What an attempt said about the upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Failed for this key (5xx, timeout, unusable body).
    Failed,
    /// Failed to reach the upstream at all: never about one key.
    Unreachable,
}

#[derive(Debug)]
pub struct KeyedBreakers {
    config: KeyedConfig,
    upstream: Breaker,
    keys: HashMap<String, Breaker>,
}

impl KeyedBreakers {
    pub fn new(config: KeyedConfig, now: Instant) -> Self {
        let upstream = Breaker::new(config.upstream.clone(), now);
        Self { config, upstream, keys: HashMap::new() }
    }

    pub fn upstream_state(&self) -> StateName {
        self.upstream.state()
    }

    /// Keys whose breaker is not closed (`circuit_breaker_keys_open`).
    pub fn keys_open(&self) -> usize {
        self.keys.values().filter(|b| b.state() != StateName::Closed).count()
    }

    /// Brings every breaker up to `now` (due open → half-open), for reports read without traffic;
    /// returns the upstream's transition and each key's.
    pub fn tick(&mut self, now: Instant) -> (Option<Transition>, Vec<(String, Transition)>) {
        let upstream = self.upstream.tick(now);
        let keys = self.keys.iter_mut().filter_map(|(key, b)| Some((key.clone(), b.tick(now)?))).collect();
        (upstream, keys)
    }

    /// Whether `admit` would refuse `key` outright (the upstream's or the key's breaker open and
    /// waiting), with the wait; changes nothing.
    pub fn refuses(&self, key: &str, now: Instant) -> Option<Duration> {
        self.upstream.refuses(now).or_else(|| self.keys.get(key)?.refuses(now))
    }

    pub fn admit(&mut self, key: &str, now: Instant) -> (Result<Ticket, Refused>, Changes) {
        let mut changes = Changes::default();
        let (upstream, transition) = self.upstream.admit(now);
        changes.upstream = transition;
        let upstream_probe = match upstream {
            Admission::Admitted { probe } => probe,
            Admission::Rejected { retry_after } => return (Err(Refused { retry_after, by_key: false }), changes),
        };
        let Some(breaker) = self.keys.get_mut(key) else {
            return (Ok(Ticket { upstream_probe, key_probe: None }), changes);
        };
        let (admission, transition) = breaker.admit(now);
        changes.key = transition;
        match admission {
            Admission::Admitted { probe } => (Ok(Ticket { upstream_probe, key_probe: probe }), changes),
            Admission::Rejected { retry_after } => {
                // The upstream's probe slot was not used after all.
                self.upstream.release(upstream_probe);
                (Err(Refused { retry_after, by_key: true }), changes)
            }
        }
    }

    pub fn record(&mut self, key: &str, ticket: Ticket, verdict: Verdict, elapsed: Duration, now: Instant) -> Changes {
        let failure = verdict != Verdict::Healthy;
        let key_transition = match verdict {
            // Not about this key: its breaker gets no sample, only its probe slot back.
            Verdict::Unreachable => {
                self.release_key(key, ticket.key_probe);
                None
            }
            Verdict::Healthy | Verdict::Failed => self.record_key(key, ticket.key_probe, failure, elapsed, now),
        };
        let counts_upstream = match verdict {
            Verdict::Healthy | Verdict::Unreachable => true,
            Verdict::Failed => self.failing_keys(now) >= self.config.min_failing_keys,
        };
        let upstream = if counts_upstream {
            self.upstream.record(ticket.upstream_probe, failure, elapsed, now)
        } else {
            // Confined to a few keys: no verdict on the upstream, but free a probe slot.
            self.upstream.release(ticket.upstream_probe);
            None
        };
        Changes { upstream, key: key_transition }
    }

    fn record_key(
        &mut self,
        key: &str,
        probe: Option<u64>,
        failure: bool,
        elapsed: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let slow = elapsed >= self.config.per_key.slow_call;
        match self.keys.get_mut(key) {
            Some(breaker) => {
                let transition = breaker.record(probe, failure, elapsed, now);
                if breaker.is_idle(now) {
                    self.keys.remove(key);
                }
                transition
            }
            None if failure || slow => {
                self.make_room(now);
                let mut breaker = Breaker::new(self.config.per_key.clone(), now);
                let transition = breaker.record(None, failure, elapsed, now);
                self.keys.insert(key.to_owned(), breaker);
                transition
            }
            None => None,
        }
    }

    fn release_key(&mut self, key: &str, probe: Option<u64>) {
        if let Some(breaker) = self.keys.get_mut(key) {
            breaker.release(probe);
        }
    }

    /// Keys with a failure, slow call or open breaker in the window, counted up to the bound.
    fn failing_keys(&self, now: Instant) -> usize {
        let needed = self.config.min_failing_keys;
        self.keys.values().filter(|b| !b.is_idle(now)).take(needed).count()
    }

    /// The call ended without a verdict (cancelled, or refused by a layer below).
    pub fn release(&mut self, key: &str, ticket: Ticket) {
        self.upstream.release(ticket.upstream_probe);
        self.release_key(key, ticket.key_probe);
    }

    /// Keeps the map under `max_keys`: forget idle breakers, then closed ones, then any.
    fn make_room(&mut self, now: Instant) {
        if self.keys.len() < self.config.max_keys {
            return;
        }
        self.keys.retain(|_, b| !b.is_idle(now));
        while self.keys.len() >= self.config.max_keys {
            let victim = self
                .keys
                .iter()
                .find(|(_, b)| b.state() == StateName::Closed)
                .or_else(|| self.keys.iter().next())
                .map(|(k, _)| k.clone());
            match victim {
                Some(key) => self.keys.remove(&key),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker(min_calls: u32, failure_rate: f64) -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_calls,
            failure_rate,
            slow_call: 600 * MS,
            slow_rate: 0.8,
            open_wait: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }

    fn breakers(max_keys: usize) -> KeyedBreakers {
        let config =
            KeyedConfig { upstream: breaker(10, 0.8), per_key: breaker(5, 0.9), max_keys, min_failing_keys: 3 };
        KeyedBreakers::new(config, Instant::now())
    }

    fn call(b: &mut KeyedBreakers, key: &str, failure: bool, now: Instant) -> Result<(), Refused> {
        let verdict = if failure { Verdict::Failed } else { Verdict::Healthy };
        attempt(b, key, verdict, now)
    }

    fn attempt(b: &mut KeyedBreakers, key: &str, verdict: Verdict, now: Instant) -> Result<(), Refused> {
        let ticket = b.admit(key, now).0?;
        b.record(key, ticket, verdict, 10 * MS, now);
        Ok(())
    }

    #[test]
    fn a_failing_key_opens_alone_and_the_others_keep_flowing() {
        let mut b = breakers(100);
        let now = Instant::now();
        for round in 0..30 {
            let _ = call(&mut b, "veggie-box", true, now);
            assert_eq!(call(&mut b, "classic-box", false, now), Ok(()), "round {round}");
        }
        let refused = call(&mut b, "veggie-box", true, now).expect_err("veggie is open");
        assert!(refused.by_key);
        assert_eq!(b.upstream_state(), StateName::Closed);
        assert_eq!(b.keys_open(), 1);
    }

    #[test]
    fn failure_across_every_key_opens_the_upstream_breaker() {
        let mut b = breakers(100);
        let now = Instant::now();
        // The first two failing keys look confined; from the third on, failures count.
        for i in 0..11u32 {
            let _ = call(&mut b, &format!("key-{i}"), true, now);
            assert_eq!(b.upstream_state(), StateName::Closed, "only {} counted", i.saturating_sub(1));
        }
        let _ = call(&mut b, "key-11", true, now);
        assert_eq!(b.upstream_state(), StateName::Open);
        let refused = call(&mut b, "never-seen", false, now).expect_err("whole upstream open");
        assert!(!refused.by_key);
        assert_eq!(refused.retry_after, Duration::from_secs(5));
    }

    #[test]
    fn two_bad_keys_failing_without_end_never_open_the_upstream() {
        let mut b = breakers(100);
        let now = Instant::now();
        for i in 0..200 {
            let t = now + Duration::from_millis(i * 50);
            let _ = call(&mut b, "veggie-box", true, t);
            let _ = call(&mut b, "family-box", true, t);
        }
        assert_eq!(b.upstream_state(), StateName::Closed);
        assert_eq!(b.keys_open(), 2);
    }

    #[test]
    fn refused_connections_open_the_upstream_whatever_the_keys() {
        let mut b = breakers(100);
        let now = Instant::now();
        for _ in 0..10 {
            attempt(&mut b, "classic-box", Verdict::Unreachable, now).expect("admitted until the upstream opens");
        }
        assert_eq!(b.upstream_state(), StateName::Open);
        assert_eq!(b.keys_open(), 0, "the key itself did nothing wrong");
    }

    #[test]
    fn an_alternating_key_at_fifty_percent_stays_closed() {
        let mut b = breakers(100);
        let now = Instant::now();
        for i in 0..100 {
            assert_eq!(call(&mut b, "e6f24d7d1c7e", i % 2 == 0, now), Ok(()), "call {i}");
        }
    }

    #[test]
    fn healthy_and_unknown_keys_take_no_room() {
        let mut b = breakers(100);
        let now = Instant::now();
        for i in 0..1000 {
            call(&mut b, &format!("user-{i}"), false, now).expect("closed");
        }
        assert!(b.keys.is_empty());
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_open_breakers_longest() {
        let mut b = breakers(3);
        let now = Instant::now();
        for _ in 0..5 {
            let _ = call(&mut b, "bad", true, now);
        }
        for i in 0..50 {
            let _ = call(&mut b, &format!("flaky-{i}"), true, now);
            assert!(b.keys.len() <= 3);
        }
        assert!(call(&mut b, "bad", true, now).is_err(), "the open breaker survived eviction");
    }

    #[test]
    fn tick_half_opens_every_due_breaker_and_names_the_keys() {
        let mut b = breakers(100);
        let now = Instant::now();
        for _ in 0..5 {
            let _ = call(&mut b, "bad", true, now);
        }
        for _ in 0..10 {
            attempt(&mut b, "any", Verdict::Unreachable, now).expect("admitted until the upstream opens");
        }
        assert_eq!((b.upstream_state(), b.keys_open()), (StateName::Open, 1));
        let half_open = Transition { from: StateName::Open, to: StateName::HalfOpen };
        assert_eq!(b.tick(now + Duration::from_secs(1)), (None, vec![]), "not due yet");
        let (upstream, keys) = b.tick(now + Duration::from_secs(5));
        assert_eq!((upstream, keys), (Some(half_open), vec![("bad".to_owned(), half_open)]));
        assert_eq!((b.upstream_state(), b.keys_open()), (StateName::HalfOpen, 1), "half-open keys still count");
        assert_eq!(b.tick(now + Duration::from_secs(6)), (None, vec![]), "each transition once");
    }

    #[test]
    fn a_key_refusal_gives_back_the_upstream_probe_slot() {
        let now = Instant::now();
        let per_key = BreakerConfig { open_wait: Duration::from_secs(10), ..breaker(5, 0.9) };
        let config = KeyedConfig { upstream: breaker(10, 0.8), per_key, max_keys: 100, min_failing_keys: 3 };
        let mut b = KeyedBreakers::new(config, now);
        for i in 0..5 {
            let _ = call(&mut b, &format!("k{i}"), true, now);
            let _ = call(&mut b, "bad", true, now);
        }
        for i in 5..7 {
            let _ = call(&mut b, &format!("k{i}"), true, now);
        }
        assert_eq!(b.upstream_state(), StateName::Open, "10 of 12 failures counted");
        assert!(b.keys.get("bad").is_some_and(|k| k.state() == StateName::Open));
        // The upstream half-opens (one probe slot) while "bad" still has 5 s to wait.
        let later = now + Duration::from_secs(5);
        let refused = b.admit("bad", later).0.expect_err("bad is still open");
        assert_eq!(refused, Refused { retry_after: Duration::from_secs(5), by_key: true });
        assert_eq!(b.upstream_state(), StateName::HalfOpen);
        assert!(b.admit("good", later).0.is_ok(), "the upstream probe slot was given back");
    }
}
