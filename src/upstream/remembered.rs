//! A bounded map whose entries live a fixed time after they were stored, the oldest forgotten
//! first when it is full: remembered 404s ([`super::not_found`]) and last good answers
//! ([`super::stale`]) both need exactly this. Hand-written because it is small and the two
//! bounds (age, count) and reloadable limits are the whole point; a cache crate would bring
//! its own eviction policy and clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Remembered<V> {
    inner: Mutex<Inner<V>>,
}

/// Every entry lives `ttl`, so insertion order is expiry order: the queue finds the oldest in
/// O(1). A queued entry whose key was stored again since is stale and skipped.
#[derive(Debug)]
struct Inner<V> {
    /// Zero: off, nothing is stored.
    ttl: Duration,
    max_keys: usize,
    entries: HashMap<String, (V, Instant)>,
    order: VecDeque<(String, Instant)>,
}

impl<V: Clone> Remembered<V> {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        let inner = Inner { ttl, max_keys, entries: HashMap::new(), order: VecDeque::new() };
        Self { inner: Mutex::new(inner) }
    }

    /// The value stored for `key` less than the TTL ago, and its age.
    pub fn get(&self, key: &str, now: Instant) -> Option<(V, Duration)> {
        let inner = self.lock();
        let (value, stored) = inner.entries.get(key)?;
        let age = now.saturating_duration_since(*stored);
        (age < inner.ttl).then(|| (value.clone(), age))
    }

    /// Stores `value` for `key` as of `now` (nothing when off).
    pub fn insert(&self, key: &str, value: V, now: Instant) {
        let mut inner = self.lock();
        if inner.ttl.is_zero() || inner.max_keys == 0 {
            return;
        }
        inner.entries.insert(key.to_owned(), (value, now));
        inner.order.push_back((key.to_owned(), now));
        inner.forget_expired_and_oldest(now);
    }

    pub fn remove(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// New bounds (a reload): a shorter TTL or a smaller size applies at once.
    pub fn set_limits(&self, ttl: Duration, max_keys: usize, now: Instant) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.max_keys = max_keys;
        if ttl.is_zero() {
            inner.entries.clear();
            inner.order.clear();
        }
        inner.forget_expired_and_oldest(now);
    }

    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.order.len())
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // Plain data: a panic elsewhere leaves it consistent; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<V> Inner<V> {
    fn forget_expired_and_oldest(&mut self, now: Instant) {
        while let Some((key, stored)) = self.order.front() {
            let stale = self.entries.get(key).map(|(_, at)| at) != Some(stored);
            let expired = now.saturating_duration_since(*stored) >= self.ttl;
            let over = self.entries.len() > self.max_keys || self.order.len() > 2 * self.max_keys.max(1);
            if !(stale || expired || over) {
                break;
            }
            if !stale {
                self.entries.remove(key);
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
    fn a_value_lives_for_the_ttl_and_tells_its_age() {
        let now = Instant::now();
        let map = Remembered::new(5 * SECOND, 10);
        map.insert("a", 1, now);
        assert_eq!(map.get("a", now + 4 * SECOND), Some((1, 4 * SECOND)));
        assert_eq!(map.get("a", now + 5 * SECOND), None);
        assert_eq!(map.get("b", now), None, "per key");
    }

    #[test]
    fn a_zero_ttl_stores_nothing() {
        let now = Instant::now();
        let map = Remembered::new(Duration::ZERO, 10);
        map.insert("a", 1, now);
        assert_eq!((map.get("a", now), map.len()), (None, (0, 0)));
    }

    #[test]
    fn it_stays_bounded_and_forgets_the_oldest_first() {
        let now = Instant::now();
        let map = Remembered::new(5 * SECOND, 3);
        for i in 0..100u64 {
            map.insert(&format!("k{i}"), i, now + Duration::from_millis(i));
            let (entries, queued) = map.len();
            assert!(entries <= 3 && queued <= 6, "{entries} {queued}");
        }
        let later = now + Duration::from_millis(100);
        assert!(map.get("k99", later).is_some() && map.get("k97", later).is_some());
        assert_eq!(map.get("k96", later), None);
    }

    #[test]
    fn storing_a_key_again_renews_it_and_its_old_entry_evicts_nothing() {
        let now = Instant::now();
        let map = Remembered::new(5 * SECOND, 2);
        map.insert("a", 1, now);
        map.insert("b", 2, now + SECOND);
        map.insert("a", 3, now + 6 * SECOND);
        assert_eq!(map.get("a", now + 10 * SECOND), Some((3, 4 * SECOND)));
        assert_eq!(map.len().0, 1, "b expired, a's first entry was stale");
    }

    #[test]
    fn removed_keys_are_gone_and_new_limits_apply_at_once() {
        let now = Instant::now();
        let map = Remembered::new(5 * SECOND, 10);
        for i in 0..5 {
            map.insert(&format!("k{i}"), i, now);
        }
        map.remove("k0");
        assert_eq!(map.get("k0", now), None);
        map.set_limits(5 * SECOND, 2, now);
        assert_eq!(map.len().0, 2, "shrunk to the new size, oldest first");
        map.set_limits(SECOND, 2, now);
        assert_eq!(map.get("k4", now + SECOND), None, "the new TTL applies to entries already stored");
        map.set_limits(Duration::ZERO, 2, now);
        assert_eq!(map.len(), (0, 0), "off forgets everything");
    }
}
