//! What operators read: the state of each upstream's breakers and of the broker connection.
//! The adapters that own that state publish it here; `http` serves it (readiness). A leaf
//! module of plain values and one small trait, so neither side imports the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

/// One upstream's breakers as readiness shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerReport {
    /// `user` or `product`.
    pub upstream: &'static str,
    /// The upstream-wide breaker now: `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Per-key breakers open or half-open now.
    pub keys_open: usize,
}

/// An upstream's breakers, read as they are at the moment of asking.
pub trait BreakerPanel: Send + Sync + 'static {
    fn report(&self) -> BreakerReport;
}

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The outbox relay's broker connection and backlog; cheap to clone and read.
#[derive(Debug, Clone)]
pub struct BrokerStatus {
    inner: Arc<(AtomicU8, AtomicI64)>,
}

impl Default for BrokerStatus {
    fn default() -> Self {
        Self { inner: Arc::new((AtomicU8::new(STARTING), AtomicI64::new(-1))) }
    }
}

impl BrokerStatus {
    /// `up` (connected), `down` (reconnecting) or `starting` (not connected yet).
    pub fn broker(&self) -> &'static str {
        match self.inner.0.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "starting",
        }
    }

    /// Unpublished rows as last counted (`None` before the first count).
    pub fn pending(&self) -> Option<i64> {
        let pending = self.inner.1.load(Ordering::Relaxed);
        (pending >= 0).then_some(pending)
    }

    pub fn set_connected(&self, connected: bool) {
        self.inner.0.store(if connected { UP } else { DOWN }, Ordering::Relaxed);
    }

    pub fn set_pending(&self, pending: i64) {
        self.inner.1.store(pending, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_status_starts_unknown_and_follows_the_relay() {
        let status = BrokerStatus::default();
        assert_eq!((status.broker(), status.pending()), ("starting", None));
        status.set_connected(true);
        status.set_pending(3);
        assert_eq!((status.broker(), status.pending()), ("up", Some(3)));
        status.set_connected(false);
        assert_eq!(status.clone().broker(), "down", "clones share the state");
    }
}
