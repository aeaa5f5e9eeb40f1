//! Stale-if-error (RFC 5861's idea, for lookups): the last good answer per key, kept for at
//! most the upstream's maximum staleness, bounded in keys. The upstream client stores every
//! good answer and forgets a key the upstream answers 404 for (a product that no longer
//! exists is never sold from memory); whether a failed lookup may use what is kept is the
//! domain's decision (`domain::place_order`).

use std::time::Duration;

use tokio::time::Instant;

use super::remembered::Remembered;
use crate::domain::Stale;

#[derive(Debug)]
pub struct StaleCache<T> {
    answers: Remembered<T>,
}

impl<T: Clone> StaleCache<T> {
    /// `max_staleness` zero: off, nothing is kept.
    pub fn new(max_staleness: Duration, max_keys: usize) -> Self {
        Self { answers: Remembered::new(max_staleness, max_keys) }
    }

    /// The upstream answered: `Some` is kept as the last good answer, `None` (404) forgets.
    pub fn answered(&self, key: &str, answer: Option<&T>, now: Instant) {
        match answer {
            Some(value) => self.answers.insert(key, value.clone(), now),
            None => self.answers.remove(key),
        }
    }

    /// The last good answer for `key`, if younger than the maximum staleness.
    pub fn get(&self, key: &str, now: Instant) -> Option<Stale<T>> {
        self.answers.get(key, now).map(|(value, age)| Stale { value, age })
    }

    /// New maximum staleness and size (a reload).
    pub fn set_limits(&self, max_staleness: Duration, max_keys: usize, now: Instant) {
        self.answers.set_limits(max_staleness, max_keys, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_good_answer_is_kept_until_too_stale_and_a_404_forgets_it() {
        let now = Instant::now();
        let cache = StaleCache::new(Duration::from_secs(60), 10);
        cache.answered("classic-box", Some(&999), now);
        cache.answered("classic-box", Some(&1099), now + Duration::from_secs(10));
        let stale = cache.get("classic-box", now + Duration::from_secs(30)).expect("kept");
        assert_eq!((stale.value, stale.age), (1099, Duration::from_secs(20)), "the last answer, aged from it");
        assert!(cache.get("classic-box", now + Duration::from_secs(70)).is_none(), "past the maximum staleness");
        cache.answered("classic-box", Some(&999), now);
        cache.answered("classic-box", None, now);
        assert!(cache.get("classic-box", now).is_none(), "a 404 is never served from memory");
    }
}
