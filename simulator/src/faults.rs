//! Faults injected at run time through the admin API, per upstream and optionally per key.
//!
//! Semantics: a fault is consulted when a request arrives, so requests already being served
//! keep the behaviour they started with (as on a real network, lifting a fault does not
//! un-hang a hung request). An outage is the exception: it closes the upstream's listener
//! (new connections are refused) and every open connection, idle or busy, before the admin
//! API answers (see `serve`). A fault with a duration lifts itself.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::server::Which;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// `percent` of requests answer later: `ms` plus a uniform `[0, jitter_ms]`.
    Delay {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default = "all")]
        percent: u8,
    },
    /// `percent` of requests answer `status` (default 500).
    Errors {
        percent: u8,
        #[serde(default = "server_error")]
        status: u16,
    },
    /// `percent` of requests get their connection reset with no answer.
    Reset {
        #[serde(default = "all")]
        percent: u8,
    },
    /// `percent` of requests are accepted and never answered.
    Hang {
        #[serde(default = "all")]
        percent: u8,
    },
    /// The body is sent at `bytes_per_sec`.
    Dribble { bytes_per_sec: u32 },
    /// The port refuses connections (whole upstream only).
    Outage,
}

fn server_error() -> u16 {
    500
}

fn all() -> u8 {
    100
}

/// A request to inject a fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFault {
    pub upstream: Which,
    /// Only this user id / product code; all keys when absent.
    #[serde(default)]
    pub key: Option<String>,
    pub fault: Fault,
    /// Lifts itself after this long; stays until restored when absent.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// An active fault as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    pub upstream: Which,
    pub key: Option<String>,
    pub fault: Fault,
    /// Milliseconds until it lifts itself, if it will.
    pub remaining_ms: Option<u64>,
    #[serde(skip)]
    until: Option<Instant>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidFault {
    #[error("percent must be 0..=100")]
    Percent,
    #[error("status must be an HTTP status 100..=599")]
    Status,
    #[error("an outage applies to a whole upstream: omit key")]
    KeyedOutage,
    #[error("bytes_per_sec must be at least 1")]
    Rate,
}

impl NewFault {
    pub fn validate(&self) -> Result<(), InvalidFault> {
        match &self.fault {
            Fault::Errors { percent, status } => {
                if *percent > 100 {
                    return Err(InvalidFault::Percent);
                }
                if !(100..=599).contains(status) {
                    return Err(InvalidFault::Status);
                }
            }
            Fault::Reset { percent } | Fault::Hang { percent } | Fault::Delay { percent, .. } if *percent > 100 => {
                return Err(InvalidFault::Percent);
            }
            Fault::Dribble { bytes_per_sec: 0 } => return Err(InvalidFault::Rate),
            Fault::Outage if self.key.is_some() => return Err(InvalidFault::KeyedOutage),
            _ => {}
        }
        Ok(())
    }
}

/// What a request should suffer, merged from every fault that matches it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub extra_delay: Duration,
    pub status: Option<u16>,
    pub reset: bool,
    pub hang: bool,
    pub bytes_per_sec: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    active: Vec<ActiveFault>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, new: NewFault, now: Instant) -> ActiveFault {
        let mut state = self.lock();
        state.next_id += 1;
        let fault = ActiveFault {
            id: state.next_id,
            upstream: new.upstream,
            key: new.key,
            fault: new.fault,
            remaining_ms: new.duration_ms,
            until: new.duration_ms.map(|ms| now + Duration::from_millis(ms)),
        };
        state.active.push(fault.clone());
        fault
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut state = self.lock();
        let before = state.active.len();
        state.active.retain(|f| f.id != id);
        state.active.len() != before
    }

    pub fn clear(&self) {
        self.lock().active.clear();
    }

    /// Active faults, expired ones dropped.
    pub fn list(&self, now: Instant) -> Vec<ActiveFault> {
        let mut state = self.lock();
        state.active.retain(|f| f.until.is_none_or(|until| until > now));
        state
            .active
            .iter()
            .map(|f| ActiveFault { remaining_ms: f.until.map(|u| (u - now).as_millis() as u64), ..f.clone() })
            .collect()
    }

    /// Whether `upstream` is in an outage now.
    pub fn outage(&self, upstream: Which, now: Instant) -> bool {
        self.list(now).iter().any(|f| f.upstream == upstream && f.fault == Fault::Outage)
    }

    /// The merged plan for one request; `roll` gives a uniform 0..100 sample per percent test.
    pub fn plan(&self, upstream: Which, key: &str, now: Instant, mut roll: impl FnMut() -> u8) -> Plan {
        let mut plan = Plan::default();
        for f in self.list(now) {
            if f.upstream != upstream || f.key.as_deref().is_some_and(|k| k != key) {
                continue;
            }
            match f.fault {
                // A roll only when it can matter, so other faults' rolls stay as they were.
                Fault::Delay { ms, jitter_ms, percent } if percent >= 100 || roll() < percent => {
                    let jitter = if jitter_ms == 0 { 0 } else { u64::from(roll()) * jitter_ms / 100 };
                    plan.extra_delay += Duration::from_millis(ms + jitter);
                }
                Fault::Errors { percent, status } if roll() < percent => plan.status = Some(status),
                Fault::Reset { percent } if roll() < percent => plan.reset = true,
                Fault::Hang { percent } if roll() < percent => plan.hang = true,
                Fault::Dribble { bytes_per_sec } => plan.bytes_per_sec = Some(bytes_per_sec),
                _ => {}
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(upstream: Which, key: Option<&str>, fault: Fault, duration_ms: Option<u64>) -> NewFault {
        NewFault { upstream, key: key.map(Into::into), fault, duration_ms }
    }

    #[test]
    fn faults_match_their_upstream_and_key_only() {
        let faults = Faults::default();
        let now = Instant::now();
        faults.add(new(Which::Products, Some("classic-box"), Fault::Errors { percent: 100, status: 503 }, None), now);
        faults.add(new(Which::Products, None, Fault::Delay { ms: 100, jitter_ms: 0, percent: 100 }, None), now);
        let plan = faults.plan(Which::Products, "classic-box", now, || 0);
        assert_eq!((plan.status, plan.extra_delay), (Some(503), Duration::from_millis(100)));
        let other = faults.plan(Which::Products, "veggie-box", now, || 0);
        assert_eq!((other.status, other.extra_delay), (None, Duration::from_millis(100)));
        assert_eq!(faults.plan(Which::Users, "classic-box", now, || 0), Plan::default());
    }

    #[test]
    fn percentages_use_the_roll() {
        let faults = Faults::default();
        let now = Instant::now();
        faults.add(new(Which::Users, None, Fault::Errors { percent: 50, status: 500 }, None), now);
        assert_eq!(faults.plan(Which::Users, "a", now, || 49).status, Some(500));
        assert_eq!(faults.plan(Which::Users, "a", now, || 50).status, None);
    }

    #[test]
    fn a_delay_with_a_percent_slows_only_that_share() {
        let faults = Faults::default();
        let now = Instant::now();
        faults.add(new(Which::Products, None, Fault::Delay { ms: 1000, jitter_ms: 0, percent: 5 }, None), now);
        assert_eq!(faults.plan(Which::Products, "a", now, || 4).extra_delay, Duration::from_secs(1));
        assert_eq!(faults.plan(Which::Products, "a", now, || 5).extra_delay, Duration::ZERO);
        let slowed =
            (0..100u8).filter(|&r| !faults.plan(Which::Products, "a", now, || r).extra_delay.is_zero()).count();
        assert_eq!(slowed, 5, "5 of the 100 equally likely rolls");
    }

    #[test]
    fn a_fault_with_a_duration_lifts_itself() {
        let faults = Faults::default();
        let now = Instant::now();
        faults.add(new(Which::Users, None, Fault::Outage, Some(1000)), now);
        assert!(faults.outage(Which::Users, now + Duration::from_millis(999)));
        assert!(!faults.outage(Which::Users, now + Duration::from_millis(1000)));
        assert!(faults.list(now + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn invalid_faults_are_refused() {
        assert_eq!(new(Which::Users, Some("k"), Fault::Outage, None).validate(), Err(InvalidFault::KeyedOutage));
        assert_eq!(
            new(Which::Users, None, Fault::Errors { percent: 101, status: 500 }, None).validate(),
            Err(InvalidFault::Percent)
        );
        assert_eq!(
            new(Which::Users, None, Fault::Errors { percent: 1, status: 42 }, None).validate(),
            Err(InvalidFault::Status)
        );
        assert_eq!(
            new(Which::Users, None, Fault::Dribble { bytes_per_sec: 0 }, None).validate(),
            Err(InvalidFault::Rate)
        );
    }

    #[test]
    fn the_json_form_is_tagged_by_type() {
        let parsed: NewFault =
            serde_json::from_str(r#"{"upstream":"product","fault":{"type":"delay","ms":1500},"duration_ms":30000}"#)
                .expect("json");
        assert_eq!(parsed.fault, Fault::Delay { ms: 1500, jitter_ms: 0, percent: 100 });
        assert_eq!(parsed.upstream, Which::Products);
    }
}
