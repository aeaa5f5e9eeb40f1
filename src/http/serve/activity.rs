//! What one connection is doing, shared by the wrappers that observe it (requests in flight,
//! bytes read) and the task that closes it when it has been idle too long.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection may sit without a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeouts {
    /// Nothing at all received since accept (a silent connection).
    pub first_byte: Duration,
    /// No request in flight after the last one ended (keep-alive, or HTTP/2 with no stream).
    pub idle: Duration,
    /// After a graceful close was asked for and nothing is in flight: then the socket is dropped.
    pub grace: Duration,
}

/// Shared per-connection state.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    heard: AtomicBool,
    idle_since: Mutex<Instant>,
    /// Woken when the deadline may have moved: the first byte arrived, or the last request in
    /// flight ended (the idle timer restarts).
    pub(super) changed: Notify,
}

/// A request in flight until dropped: when its response body has been written (or abandoned).
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            self.0.changed.notify_one();
        }
    }
}

impl Activity {
    pub fn new() -> std::sync::Arc<Self> {
        let now = Instant::now();
        std::sync::Arc::new(Self {
            accepted: now,
            in_flight: AtomicUsize::new(0),
            heard: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            changed: Notify::new(),
        })
    }

    pub fn begin(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(std::sync::Arc::clone(self))
    }

    /// The client sent something (its first byte ends the first-byte timeout).
    pub fn heard(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            accepted: self.accepted,
            in_flight: self.in_flight.load(Ordering::Acquire),
            heard: self.heard.load(Ordering::Relaxed),
            idle_since: *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// When this connection should be closed (`closing` = when a graceful close was asked for),
    /// or `None` while a request is in flight: a request is never cut by an idle timer.
    pub fn deadline(&self, timeouts: &IdleTimeouts, closing: Option<Instant>) -> Option<Instant> {
        self.snapshot().deadline(timeouts, closing)
    }
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    accepted: Instant,
    in_flight: usize,
    heard: bool,
    idle_since: Instant,
}

impl Snapshot {
    fn deadline(&self, t: &IdleTimeouts, closing: Option<Instant>) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match closing {
            Some(asked) => asked.max(self.idle_since) + t.grace,
            None if !self.heard => self.accepted + t.first_byte,
            None => self.idle_since + t.idle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: IdleTimeouts = IdleTimeouts {
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        grace: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_gets_the_first_byte_timeout() {
        let activity = Activity::new();
        let accepted = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(activity.deadline(&T, None), Some(accepted + T.first_byte), "measured from accept");
        activity.heard();
        assert_eq!(activity.deadline(&T, None), Some(accepted + T.idle), "a first byte ends it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_runs_only_with_nothing_in_flight_and_restarts_after_each_request() {
        let activity = Activity::new();
        activity.heard();
        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.deadline(&T, None), None, "a request in flight is never cut");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(first);
        assert_eq!(activity.deadline(&T, None), None, "one is still in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        let ended = Instant::now();
        drop(second);
        assert_eq!(activity.deadline(&T, None), Some(ended + T.idle), "idle from the last response");
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_waits_for_requests_in_flight_then_allows_only_the_grace() {
        let activity = Activity::new();
        activity.heard();
        let asked = Instant::now();
        assert_eq!(activity.deadline(&T, Some(asked)), Some(asked + T.grace), "idle: closed at once");
        let request = activity.begin();
        assert_eq!(activity.deadline(&T, Some(asked)), None, "in flight: it finishes first");
        tokio::time::advance(Duration::from_secs(7)).await;
        let ended = Instant::now();
        drop(request);
        assert_eq!(activity.deadline(&T, Some(asked)), Some(ended + T.grace));
    }

    #[tokio::test]
    async fn the_first_byte_and_the_last_request_ending_wake_the_watcher() {
        let activity = Activity::new();
        activity.heard();
        tokio::time::timeout(Duration::from_secs(5), activity.changed.notified())
            .await
            .expect("woken by the first byte");
        let request = activity.begin();
        drop(request);
        tokio::time::timeout(Duration::from_secs(5), activity.changed.notified()).await.expect("woken when idle");
    }
}
