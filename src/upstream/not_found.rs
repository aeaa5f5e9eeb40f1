//! Remembered 404s. A key an upstream has just said it does not know is "unknown" for a short
//! TTL without asking again, and an order checks this before either lookup starts: a flood of
//! one unknown code costs one lookup per TTL instead of two requests per order (the other
//! upstream's lookup would otherwise start, only to be cancelled). The price: a user or product
//! created upstream is seen at most one TTL later. Bounded: the oldest keys are forgotten first.

use std::time::Duration;

use tokio::time::Instant;

use super::remembered::Remembered;

#[derive(Debug)]
pub struct NotFoundCache {
    keys: Remembered<()>,
}

impl NotFoundCache {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self { keys: Remembered::new(ttl, max_keys) }
    }

    /// Remembers nothing.
    pub fn off() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    /// Whether the upstream answered 404 for `key` less than a TTL ago.
    pub fn knows_unknown(&self, key: &str, now: Instant) -> bool {
        self.keys.get(key, now).is_some()
    }

    /// The upstream just answered 404 for `key`.
    pub fn remember(&self, key: &str, now: Instant) {
        self.keys.insert(key, (), now);
    }

    /// New TTL and size (a reload).
    pub fn set_limits(&self, ttl: Duration, max_keys: usize, now: Instant) {
        self.keys.set_limits(ttl, max_keys, now);
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
        assert_eq!(cache.keys.len(), (0, 0));
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_the_oldest_first() {
        let now = Instant::now();
        let cache = NotFoundCache::new(5 * SECOND, 3);
        for i in 0..100u64 {
            cache.remember(&format!("ghost-{i}"), now + Duration::from_millis(i));
            let (keys, queued) = cache.keys.len();
            assert!(keys <= 3 && queued <= 6, "{keys} {queued}");
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
        assert_eq!(cache.keys.len().0, 1);
    }
}
