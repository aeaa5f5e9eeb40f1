//! Remembered 404s. A key an upstream has just said it does not know is "unknown" for a short
//! TTL without asking again, and an order checks this before either lookup starts: a flood of
//! one unknown code costs one lookup per TTL instead of two requests per order (the other
//! upstream's lookup would otherwise start, only to be cancelled). The price: a user or product
//! created upstream is seen at most one TTL later. Bounded: the oldest keys are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct NotFoundCache {
    /// Zero: off, nothing is remembered.
    ttl: Duration,
    max_keys: usize,
    keys: Mutex<Keys>,
}

/// Every entry lives exactly `ttl`, so insertion order is expiry order: the queue finds the
/// oldest in O(1). A queued entry whose key was remembered again since is stale and skipped.
#[derive(Debug, Default)]
struct Keys {
    until: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl NotFoundCache {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self { ttl, max_keys, keys: Mutex::default() }
    }

    /// Remembers nothing.
    pub fn off() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    /// Whether the upstream answered 404 for `key` less than a TTL ago.
    pub fn knows_unknown(&self, key: &str, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        self.lock().until.get(key).is_some_and(|until| now < *until)
    }

    /// The upstream just answered 404 for `key`.
    pub fn remember(&self, key: &str, now: Instant) {
        if self.ttl.is_zero() || self.max_keys == 0 {
            return;
        }
        let until = now + self.ttl;
        let mut keys = self.lock();
        keys.until.insert(key.to_owned(), until);
        keys.order.push_back((key.to_owned(), until));
        keys.forget_expired_and_oldest(now, self.max_keys);
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // Plain data: a panic elsewhere leaves it consistent; keep serving.
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Keys {
    fn forget_expired_and_oldest(&mut self, now: Instant, max_keys: usize) {
        while let Some((key, until)) = self.order.front() {
            let stale = self.until.get(key) != Some(until);
            let over = self.until.len() > max_keys || self.order.len() > 2 * max_keys;
            if !(stale || *until <= now || over) {
                break;
            }
            if !stale {
                self.until.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_404_is_remembered_for_the_ttl_only() {
        let now = Instant::now();
        let cache = NotFoundCache::new(5 * SECOND, 10);
        assert!(!cache.knows_unknown("ghost", now));
        cache.remember("ghost", now);
        assert!(cache.knows_unknown("ghost", now + 4 * SECOND));
        assert!(!cache.knows_unknown("ghost", now + 5 * SECOND), "a product created since is seen");
        assert!(!cache.knows_unknown("other", now), "per key");
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let now = Instant::now();
        let cache = NotFoundCache::new(Duration::ZERO, 10);
        cache.remember("ghost", now);
        assert!(!cache.knows_unknown("ghost", now));
        assert!(cache.lock().until.is_empty());
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_the_oldest_first() {
        let now = Instant::now();
        let cache = NotFoundCache::new(5 * SECOND, 3);
        for i in 0..100u64 {
            cache.remember(&format!("ghost-{i}"), now + Duration::from_millis(i));
            let keys = cache.lock();
            assert!(keys.until.len() <= 3 && keys.order.len() <= 6, "{keys:?}");
        }
        let later = now + Duration::from_millis(100);
        assert!(cache.knows_unknown("ghost-99", later) && cache.knows_unknown("ghost-97", later));
        assert!(!cache.knows_unknown("ghost-96", later));
    }

    #[test]
    fn remembering_a_key_again_extends_it_and_its_old_entry_evicts_nothing() {
        let now = Instant::now();
        let cache = NotFoundCache::new(5 * SECOND, 2);
        cache.remember("a", now);
        cache.remember("b", now + SECOND);
        cache.remember("a", now + 6 * SECOND);
        // "a"'s first entry expired and is stale; "b" expired: only the fresh "a" is left.
        assert!(cache.knows_unknown("a", now + 10 * SECOND));
        assert_eq!(cache.lock().until.len(), 1);
    }
}
