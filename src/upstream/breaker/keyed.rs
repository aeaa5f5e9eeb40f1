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

use super::state::{Admission, Breaker, Mode, StateName, Transition};
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

    /// The mode of the whole upstream; per-key breakers are bypassed while it is forced.
    pub fn mode(&self) -> Mode {
        self.upstream.mode()
    }

    /// Hands every breaker of the upstream to `mode`: the upstream-wide breaker changes mode
    /// and the per-key breakers are forgotten (forced, they are bypassed; back to auto, every
    /// key starts afresh like the upstream).
    pub fn set_mode(&mut self, mode: Mode) -> Option<Transition> {
        let transition = self.upstream.set_mode(mode);
        if transition.is_some() || mode != Mode::Auto {
            self.keys.clear();
        }
        transition
    }

    /// New thresholds for every breaker, kept in their states.
    pub fn reconfigure(&mut self, config: KeyedConfig, now: Instant) {
        self.upstream.reconfigure(config.upstream.clone(), now);
        for breaker in self.keys.values_mut() {
            breaker.reconfigure(config.per_key.clone(), now);
        }
        self.config = config;
    }

    /// Keys whose breaker is open or half-open, for the admin API.
    pub fn open_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            self.keys.iter().filter(|(_, b)| b.state() != StateName::Closed).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
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
        if self.upstream.mode() == Mode::ForcedClosed {
            return None;
        }
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
        if self.upstream.mode() == Mode::ForcedClosed {
            return (Ok(Ticket { upstream_probe, key_probe: None }), changes);
        }
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
        if self.upstream.mode() != Mode::Auto {
            return Changes::default(); // forced: nothing is judged
        }
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
#[path = "keyed_tests.rs"]
mod tests;
