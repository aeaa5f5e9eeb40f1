//! Connections kept checked out between statements, so that giving one back costs nothing.
//!
//! Why: sqlx pings every connection its pool takes back. Dropping a `PoolConnection` spawns a
//! task that sends PostgreSQL a `Sync` and waits for its answer, so each statement paid a second
//! round trip, a task and a database wake-up. Measured at capacity here: about 5 % of the
//! service's CPU and 8 % of PostgreSQL's per order (docs/overload.md). The ping on release can
//! also wait forever on a silent peer while holding its pool slot (sqlx issues #4349, #4407).
//!
//! Contract:
//! - A statement that ended cleanly parks its connection here; the next statement takes the
//!   connection parked last. A statement that failed or was cancelled drops its connection as
//!   before, and sqlx's ping on release cleans up whatever it left half-read.
//! - A connection parked for `fresh_for` or longer is not handed out again. It is dropped back
//!   to the pool, which pings it before anyone reuses it (the pool's 500 ms
//!   `before_acquire` window). So a connection that died while parked (a database restart)
//!   is never the one a statement gets.
//! - Turns are handed out in arrival order (tokio's fair semaphore), to parked and new
//!   connections alike: a statement waiting for the pool is never overtaken for ever by
//!   later ones that find a parked connection.
//! - A connection that has gone through here for `max_age` goes back to the pool at its next
//!   park, so the pool's `max_lifetime` (which it checks only on connections given back) still
//!   retires connections under steady load.
//! - At most `size` connections are held through here, parked or in use. The pool's other
//!   connections stay free for what takes them from the pool directly (the relay's claim, the
//!   readiness check).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Parked connections and the turns to use them.
pub(super) struct Warm<C> {
    turns: Arc<Semaphore>,
    /// Oldest first (each park pushes at the end): the connection, when it was parked, and
    /// when it first came through here.
    parked: Mutex<Vec<(C, Instant, Instant)>>,
    fresh_for: Duration,
    max_age: Duration,
}

/// A statement's turn: a parked connection, if a fresh one was there, and the permit that lets
/// it hold a connection until it parks it or drops the turn.
pub(super) struct Turn<C> {
    warm: Arc<Warm<C>>,
    parked: Option<C>,
    /// When the connection this turn holds first came through here (now, for a new one).
    since: Instant,
    _permit: OwnedSemaphorePermit,
}

impl<C> std::fmt::Debug for Warm<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parked = self.parked.lock().map(|parked| parked.len()).unwrap_or_default();
        f.debug_struct("Warm").field("parked", &parked).field("free_turns", &self.turns.available_permits()).finish()
    }
}

impl<C> Warm<C> {
    pub(super) fn new(size: usize, fresh_for: Duration, max_age: Duration) -> Arc<Self> {
        let turns = Arc::new(Semaphore::new(size));
        Arc::new(Self { turns, parked: Mutex::new(Vec::new()), fresh_for, max_age })
    }

    /// Waits for a turn. Parked connections too old to hand out are dropped here, outside the
    /// lock.
    pub(super) async fn turn(self: &Arc<Self>) -> Turn<C> {
        let permit = Arc::clone(&self.turns).acquire_owned().await.expect("the semaphore is never closed");
        let now = Instant::now();
        let (stale, parked) = {
            let mut parked = self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let old = parked.partition_point(|(_, at, _)| now.duration_since(*at) >= self.fresh_for);
            let stale: Vec<_> = parked.drain(..old).collect();
            (stale, parked.pop())
        };
        drop(stale);
        let since = parked.as_ref().map_or(now, |(_, _, since)| *since);
        Turn { warm: Arc::clone(self), parked: parked.map(|(conn, _, _)| conn), since, _permit: permit }
    }

    #[cfg(test)]
    fn parked_count(&self) -> usize {
        self.parked.lock().expect("lock").len()
    }
}

impl<C> Turn<C> {
    /// The parked connection this turn found, if any; else the caller opens or acquires one.
    pub(super) fn take(&mut self) -> Option<C> {
        self.parked.take()
    }

    /// Parks `conn` for the next turn, then gives this turn up. (A parked connection this turn
    /// found and did not take goes back to the pool with the turn.)
    pub(super) fn park(self, conn: C) {
        let now = Instant::now();
        if now.duration_since(self.since) >= self.warm.max_age {
            return; // dropped: back to the pool, which retires it past its lifetime
        }
        self.warm.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((conn, now, self.since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_is_handed_to_the_next_turn() {
        let warm = Warm::new(2, Duration::from_millis(500), HOUR);
        let mut first = warm.turn().await;
        assert_eq!(first.take(), None, "nothing is parked at first");
        first.park("conn-1");
        let mut second = warm.turn().await;
        assert_eq!(second.take(), Some("conn-1"));
        assert_eq!(warm.parked_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_parked_last_is_taken_first() {
        let warm = Warm::new(2, Duration::from_millis(500), HOUR);
        let (a, b) = (warm.turn().await, warm.turn().await);
        a.park("older");
        b.park("newer");
        assert_eq!(warm.turn().await.take(), Some("newer"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_parked_too_long_is_dropped_not_handed_out() {
        let warm = Warm::new(2, Duration::from_millis(500), HOUR);
        let dropped = Arc::new(());
        warm.turn().await.park(Arc::clone(&dropped));
        tokio::time::advance(Duration::from_millis(499)).await;
        let mut fresh = warm.turn().await;
        let conn = fresh.take().expect("still fresh at 499 ms");
        fresh.park(conn);
        tokio::time::advance(Duration::from_millis(500)).await;
        let mut late = warm.turn().await;
        assert!(late.take().is_none(), "parked 500 ms ago: not handed out");
        assert_eq!(Arc::strong_count(&dropped), 1, "and dropped back to the pool");
        assert_eq!(warm.parked_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_connections_go_even_when_a_fresh_one_is_taken() {
        let warm = Warm::new(3, Duration::from_millis(500), HOUR);
        let old = Arc::new("old");
        warm.turn().await.park(Arc::clone(&old));
        tokio::time::advance(Duration::from_millis(600)).await;
        warm.turn().await.park(Arc::new("new"));
        assert_eq!(warm.turn().await.take().as_deref(), Some(&"new"));
        assert_eq!(Arc::strong_count(&old), 1, "the stale one was dropped on the way");
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_bounded_and_handed_out_in_arrival_order() {
        let warm: Arc<Warm<u32>> = Warm::new(1, Duration::from_millis(500), HOUR);
        let holder = warm.turn().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..3 {
            let (warm, order) = (Arc::clone(&warm), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let mut turn = warm.turn().await;
                order.lock().expect("lock").push((i, turn.take()));
                turn.park(i + 10);
            }));
            tokio::task::yield_now().await; // queued in this order
        }
        tokio::task::yield_now().await;
        assert!(order.lock().expect("lock").is_empty(), "a size-1 warm set admits one turn at a time");
        holder.park(7);
        for task in waiting {
            task.await.expect("task");
        }
        let got = order.lock().expect("lock").clone();
        assert_eq!(got, vec![(0, Some(7)), (1, Some(10)), (2, Some(11))], "FIFO, each finding the last park");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_past_its_age_goes_back_to_the_pool_at_its_next_park() {
        let warm = Warm::new(1, Duration::from_millis(500), Duration::from_secs(60));
        let original = Arc::new("conn");
        warm.turn().await.park(Arc::clone(&original));
        for _ in 0..149 {
            tokio::time::advance(Duration::from_millis(400)).await;
            let mut turn = warm.turn().await;
            let conn = turn.take().expect("reused while younger than 60 s");
            turn.park(conn);
        }
        tokio::time::advance(Duration::from_millis(450)).await;
        let mut turn = warm.turn().await;
        let conn = turn.take().expect("parked 450 ms ago: fresh");
        turn.park(conn);
        assert_eq!(warm.parked_count(), 0, "60.05 s after it first came through: not parked again");
        assert_eq!(Arc::strong_count(&original), 1, "dropped, so back to the pool");
    }
}
