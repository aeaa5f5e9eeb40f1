//! What operators read and steer: each upstream's breakers (state, mode), the broker connection,
//! and reloading the resilience settings. The adapters that own that state publish it here;
//! `http` serves it (readiness, the admin API). A leaf module of plain values and small traits,
//! so neither side imports the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

/// How an upstream's breakers decide: by themselves, or as an operator forced them (admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerMode {
    /// The breakers open and close by their thresholds (the normal mode).
    Auto,
    /// Every call is refused, as by an open breaker, until an operator says otherwise.
    ForcedOpen,
    /// Every call goes through, whatever the failures; the per-key breakers are bypassed too.
    ForcedClosed,
}

impl BreakerMode {
    pub const ALL: [BreakerMode; 3] = [BreakerMode::Auto, BreakerMode::ForcedOpen, BreakerMode::ForcedClosed];
    /// The `mode` label values (and the admin API's words), in the order of [`BreakerMode::ALL`].
    pub const LABELS: [&'static str; 3] = ["auto", "forced_open", "forced_closed"];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerMode::Auto => "auto",
            BreakerMode::ForcedOpen => "forced_open",
            BreakerMode::ForcedClosed => "forced_closed",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == word)
    }
}

/// One upstream's breakers as readiness and the admin API show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerReport {
    /// `user` or `product`.
    pub upstream: &'static str,
    /// The upstream-wide breaker now: `closed`, `open` or `half_open` (a forced breaker reads
    /// as what it does: `open` when forced open, `closed` when forced closed).
    pub state: &'static str,
    /// Who decides: `auto`, `forced_open` or `forced_closed`.
    pub mode: BreakerMode,
    /// Per-key breakers open or half-open now.
    pub keys_open: usize,
}

/// An upstream's breakers, read as they are at the moment of asking, and steered by operators.
pub trait BreakerPanel: Send + Sync + 'static {
    fn report(&self) -> BreakerReport;
    /// The keys whose own breaker is open or half-open now (bounded by `BREAKER_MAX_KEYS`).
    fn open_keys(&self) -> Vec<String>;
    /// Hands the breakers to `mode` (logged and counted); `auto` starts them afresh, closed.
    fn set_mode(&self, mode: BreakerMode) -> BreakerReport;
}

/// What `POST /admin/reload` (and `SIGHUP`) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings now in force with a new value.
    pub changed: Vec<SettingChange>,
    /// Variables whose value differs in the environment file but that only a restart applies
    /// (listeners, database, broker, upstream URLs).
    pub restart_required: Vec<String>,
}

/// One variable's old and new value, as `--print-config` shows them (passwords hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub variable: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Re-reads the resilience settings and puts them in force without dropping a request.
pub trait Reload: Send + Sync + 'static {
    /// `Err` (the reason, naming the variable) leaves the old settings in force. `trigger` says
    /// who asked (`admin`, `sighup`), for the log line.
    fn reload(&self, trigger: &'static str) -> Result<ReloadReport, String>;
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
    fn breaker_modes_read_back_as_their_words() {
        for (mode, word) in BreakerMode::ALL.into_iter().zip(BreakerMode::LABELS) {
            assert_eq!((mode.as_str(), BreakerMode::parse(word)), (word, Some(mode)));
        }
        assert_eq!(BreakerMode::parse("open"), None);
    }

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
