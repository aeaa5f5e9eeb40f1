//! The cap on open connections (lingering ones included) and the `http_server_open_connections`
//! gauge, kept in one place so the two can never disagree.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::telemetry::metrics;

/// How often a refused connection is logged at most; the line counts the ones in between.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// At most `max` connections open at once.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    max: u32,
    refused_unlogged: u64,
    last_warning: Option<Instant>,
}

/// One open connection's place, from accept until its socket is closed.
#[derive(Debug)]
pub struct Slot(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::connection_closed();
    }
}

impl Slots {
    pub fn new(max: usize) -> Self {
        let max = u32::try_from(max).unwrap_or(u32::MAX).min(Semaphore::MAX_PERMITS as u32);
        Self { permits: Arc::new(Semaphore::new(max as usize)), max, refused_unlogged: 0, last_warning: None }
    }

    /// A slot for a connection just accepted, or `None` at the cap (the caller closes it at
    /// once: a fast refusal lets a balancer or client go elsewhere, where a full backlog would
    /// leave it hanging). Refusals are logged at most once per [`WARN_EVERY`].
    pub fn take(&mut self) -> Option<Slot> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                metrics::connection_opened();
                Some(Slot(permit))
            }
            Err(_) => {
                self.refused_unlogged += 1;
                let now = Instant::now();
                if self.last_warning.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
                    tracing::warn!(
                        max = self.max,
                        refused = self.refused_unlogged,
                        "connection cap reached (HTTP_MAX_CONNECTIONS): closing new connections at once"
                    );
                    self.last_warning = Some(now);
                    self.refused_unlogged = 0;
                }
                None
            }
        }
    }

    /// Resolves once every slot has been given back (every connection closed).
    pub async fn all_released(&self) {
        let _ = self.permits.acquire_many(self.max).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_refuses_until_a_slot_is_given_back() {
        let mut slots = Slots::new(2);
        let first = slots.take().expect("one");
        let second = slots.take().expect("two");
        assert!(slots.take().is_none(), "the third is refused");
        assert_eq!(slots.refused_unlogged, 0, "the first refusal is logged at once");
        assert!(slots.take().is_none());
        assert_eq!(slots.refused_unlogged, 1, "later refusals wait for the next line");
        drop(first);
        let third = slots.take().expect("room again");
        drop((second, third));
        slots.all_released().await;
    }
}
