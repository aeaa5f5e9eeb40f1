//! Group commit: orders placed at the same time share one insert statement, so one transaction,
//! one round trip and one commit, instead of one each.
//!
//! Why: the transaction, not the row, is what PostgreSQL pays for. pgbench of the order's own
//! statement here: about 300 µs of server CPU per one-order transaction, about 50 µs per order in
//! transactions of 16 (docs/fleet.md, eighth session).
//!
//! Contract:
//! - Batches form by themselves, with no timer: a submission waits only while `writers`
//!   batches are already under way, and then goes with whatever queued meanwhile, at most `max`.
//!   A lone order at low load is written at once, alone.
//! - Each submission gets its own result, in submission order within its batch.
//! - A submission waits for a writer no longer than its `patience` (the pool's acquire timeout:
//!   a database that stopped answering holds every writer, and an order must then fail as
//!   unavailable, not hang). One whose caller gave up or has gone (its future dropped, e.g. by
//!   the order's deadline) before its batch starts is not written. Once its batch has started,
//!   the caller waits for the result, as it would for a statement already sent.
//!
//! Hand-written (about forty lines): the batching crates found either run a thread of their own
//! or flush on a timer, which adds latency at low load.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// An item's state: queued, taken into a batch, or given up by its caller (whichever of the
/// last two comes first wins, so an item is never both written and reported as not written).
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// One submission and where its result goes.
struct Item<T, R> {
    input: T,
    reply: oneshot::Sender<R>,
    state: Arc<AtomicU8>,
}

impl<T, R> Item<T, R> {
    /// Whether this item goes into the batch being formed.
    fn start(&self) -> bool {
        !self.reply.is_closed()
            && self.state.compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// What a submission came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome<R> {
    /// Written (or not) by its batch: the write's result.
    Done(R),
    /// No writer was free within the patience: nothing was written.
    Impatient,
    /// The dispatcher has stopped (the runtime is shutting down): nothing was written.
    Stopped,
}

/// A handle to a running group; cloning shares it. The dispatcher stops when every handle is gone.
///
/// The queue has no bound of its own: what waits in it is orders in flight, which the edge's
/// write limit (`HTTP_MAX_IN_FLIGHT`) bounds, and each waits no longer than its patience.
pub(super) struct Group<T, R> {
    queue: mpsc::UnboundedSender<Item<T, R>>,
}

impl<T, R> Clone for Group<T, R> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T, R> std::fmt::Debug for Group<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// Starts the dispatcher (call within a tokio runtime). `write` gets a batch of 1..=`max`
    /// inputs and must return one result per input, in their order.
    pub(super) fn spawn<W, F>(writers: usize, max: usize, write: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(waiting, Arc::new(Semaphore::new(writers.max(1))), max.max(1), write));
        Self { queue }
    }

    /// Writes `input` with whatever else is waiting, if a writer takes it within `patience`.
    pub(super) async fn submit(&self, input: T, patience: Duration) -> Outcome<R> {
        let (reply, mut result) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        if self.queue.send(Item { input, reply, state: Arc::clone(&state) }).is_err() {
            return Outcome::Stopped;
        }
        let done = |r: Result<R, _>| r.map_or(Outcome::Stopped, Outcome::Done);
        match tokio::time::timeout(patience, &mut result).await {
            Ok(r) => done(r),
            Err(_) if state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() => {
                Outcome::Impatient
            }
            Err(_) => done(result.await),
        }
    }
}

async fn dispatch<T, R, W, F>(
    mut waiting: mpsc::UnboundedReceiver<Item<T, R>>,
    writers: Arc<Semaphore>,
    max: usize,
    write: W,
) where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Vec<T>) -> F,
    F: Future<Output = Vec<R>> + Send + 'static,
{
    loop {
        // A writer first, then the queue: while every writer is busy, submissions pile up.
        let Ok(writer) = Arc::clone(&writers).acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let mut items = vec![first];
        while items.len() < max {
            match waiting.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        items.retain(Item::start);
        if items.is_empty() {
            continue;
        }
        let (inputs, replies): (Vec<T>, Vec<_>) = items.into_iter().map(|i| (i.input, i.reply)).unzip();
        let written = write(inputs);
        tokio::spawn(async move {
            let results = written.await;
            debug_assert_eq!(results.len(), replies.len(), "one result per input");
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            drop(writer);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    const PATIENT: Duration = Duration::from_secs(60);

    type Batches = Arc<Mutex<Vec<Vec<u32>>>>;

    /// `group.submit(input)` in a task of its own.
    fn submitting(group: &Group<u32, u32>, input: u32) -> tokio::task::JoinHandle<Outcome<u32>> {
        let group = group.clone();
        tokio::spawn(async move { group.submit(input, PATIENT).await })
    }

    /// A group whose writes take `delay` and are recorded, each answering its inputs doubled.
    fn recording(writers: usize, max: usize, delay: Duration) -> (Group<u32, u32>, Batches) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&batches);
        let group = Group::spawn(writers, max, move |inputs: Vec<u32>| {
            seen.lock().expect("batches").push(inputs.clone());
            async move {
                tokio::time::sleep(delay).await;
                inputs.into_iter().map(|i| i * 2).collect()
            }
        });
        (group, batches)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_submission_is_written_at_once_and_alone() {
        let (group, batches) = recording(1, 64, Duration::from_millis(5));
        let started = tokio::time::Instant::now();
        assert_eq!(group.submit(21, PATIENT).await, Outcome::Done(42));
        assert_eq!(started.elapsed(), Duration::from_millis(5), "no wait beyond the write itself");
        assert_eq!(*batches.lock().expect("batches"), vec![vec![21]]);
    }

    #[tokio::test(start_paused = true)]
    async fn submissions_made_while_the_writers_are_busy_share_the_next_batch() {
        let (group, batches) = recording(1, 64, Duration::from_millis(5));
        let first = submitting(&group, 1);
        tokio::time::sleep(Duration::from_millis(1)).await; // the first batch is under way
        let rest: Vec<_> = (2..=5).map(|i| submitting(&group, i)).collect();
        assert_eq!(first.await.expect("task"), Outcome::Done(2));
        for (i, handle) in (2..=5).zip(rest) {
            assert_eq!(handle.await.expect("task"), Outcome::Done(i * 2), "each gets its own result");
        }
        assert_eq!(*batches.lock().expect("batches"), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_at_most_max_and_writers_run_side_by_side() {
        let (group, batches) = recording(2, 3, Duration::from_millis(5));
        let started = tokio::time::Instant::now();
        let handles: Vec<_> = (0..6).map(|i| submitting(&group, i)).collect();
        for (i, handle) in (0..6).zip(handles) {
            assert_eq!(handle.await.expect("task"), Outcome::Done(i * 2));
        }
        let batches = batches.lock().expect("batches").clone();
        assert!(batches.iter().all(|b| b.len() <= 3), "{batches:?}");
        assert_eq!(batches.concat(), (0..6).collect::<Vec<_>>(), "every input once, in order");
        // Two writers at once: six inputs, at least two batches, done in the time of at most three.
        assert!(started.elapsed() <= Duration::from_millis(15), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_before_its_batch_starts_is_not_written() {
        let (group, batches) = recording(1, 64, Duration::from_millis(5));
        let busy = submitting(&group, 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Gives up after 2 ms, while the first batch (5 ms) still holds the only writer.
        let gone = tokio::time::timeout(Duration::from_millis(2), group.submit(2, PATIENT)).await;
        assert!(gone.is_err());
        assert_eq!(busy.await.expect("task"), Outcome::Done(2));
        assert_eq!(group.submit(3, PATIENT).await, Outcome::Done(6));
        assert_eq!(*batches.lock().expect("batches"), vec![vec![1], vec![3]], "2 was never written");
    }

    #[tokio::test(start_paused = true)]
    async fn a_submission_waits_for_a_writer_no_longer_than_its_patience_but_waits_for_its_started_batch() {
        let (group, batches) = recording(1, 64, Duration::from_millis(50));
        let busy = submitting(&group, 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let started = tokio::time::Instant::now();
        assert_eq!(group.submit(2, Duration::from_millis(10)).await, Outcome::Impatient);
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        assert_eq!(busy.await.expect("task"), Outcome::Done(2));
        // Taken by a writer at once, its batch outlasts the patience: the result still comes.
        assert_eq!(group.submit(3, Duration::from_millis(10)).await, Outcome::Done(6));
        assert_eq!(*batches.lock().expect("batches"), vec![vec![1], vec![3]], "2 gave up and was never written");
    }

    #[test]
    fn a_stopped_group_says_so() {
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let first = runtime();
        let group = first.block_on(async { recording(1, 64, Duration::ZERO).0 });
        drop(first); // the dispatcher goes with its runtime
        assert_eq!(runtime().block_on(group.submit(1, PATIENT)), Outcome::Stopped);
    }
}
