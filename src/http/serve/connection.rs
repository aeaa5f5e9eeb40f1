//! One connection's life: hyper serves it while a watcher closes it when it has been idle too
//! long or the server shuts down, and its socket lingers before it is really closed.

use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::activity::{Activity, IdleTimeouts};
use super::linger::Linger;
use super::slots::Slot;
use super::tracked::{TrackedIo, TrackedService};

pub type Connection = auto::Connection<'static, TokioIo<TrackedIo>, TrackedService, TokioExecutor>;

/// Everything one connection task owns.
pub struct Watched {
    pub connection: Connection,
    pub activity: Arc<Activity>,
    /// The socket, once hyper has let go of it.
    pub given_back: oneshot::Receiver<TcpStream>,
    /// Its place under the connection cap, given back only after the lingering close.
    pub slot: Slot,
}

/// Serves the connection until hyper ends it or the watcher does. The watcher asks hyper for a
/// graceful close (HTTP/2: GOAWAY) when the connection has been idle past its timeout, or when
/// `stop` turns true; a request in flight always finishes first. A connection with nothing in
/// flight that has not ended within the grace after that is dropped.
pub async fn run(watched: Watched, timeouts: IdleTimeouts, linger: Linger, stop: watch::Receiver<bool>) {
    let Watched { connection, activity, given_back, slot } = watched;
    // Returns once hyper is done with the connection, and drops it: the socket comes back.
    // Boxed: moved by value, a connection was stored twice in this task's future.
    serve_until_closed(Box::pin(connection), &activity, timeouts, stop).await;
    if let Ok(stream) = given_back.await {
        linger.close(stream).await;
    }
    drop(slot);
}

async fn serve_until_closed(
    mut connection: Pin<Box<Connection>>,
    activity: &Activity,
    timeouts: IdleTimeouts,
    mut stop: watch::Receiver<bool>,
) {
    let mut closing: Option<Instant> = None;
    loop {
        let deadline = activity.deadline(&timeouts, closing);
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            () = timer => {
                // Re-read: a request may have started since the deadline was computed.
                if activity.deadline(&timeouts, closing).is_none_or(|at| at > Instant::now()) {
                    continue;
                }
                if closing.is_some() {
                    break;
                }
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            () = activity.changed.notified() => {}
            _ = stop.wait_for(|stop| *stop), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;

    use super::super::slots::Slots;
    use super::*;

    /// A connection task's future is allocated whole when the connection is accepted and kept
    /// until it closes, whatever state it is in: its size is what every open connection costs
    /// before hyper's own buffers. A 16 KiB lingering buffer held inline made it 18 KiB (16 MiB
    /// at 1,000 connections), and a connection stored by value twice added 1.5 KiB.
    #[tokio::test]
    async fn a_connection_task_stays_small_whatever_it_may_do_later() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        let stream = TcpStream::from_std(accepted).expect("tokio stream");

        let activity = Activity::new();
        let (io, given_back) = TrackedIo::new(stream, activity.clone());
        let service = TrackedService::new(Router::new(), activity.clone());
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let slot = Slots::new(1).take().expect("a slot");
        let watched = Watched { connection: connection.into_owned(), activity, given_back, slot };
        let timeouts =
            IdleTimeouts { first_byte: Duration::from_secs(1), idle: Duration::from_secs(1), grace: Duration::ZERO };
        let task = run(watched, timeouts, Linger::DEFAULT, watch::channel(false).1);

        let size = std::mem::size_of_val(&task);
        let one_connection = std::mem::size_of::<Connection>();
        assert!(size < 2 * one_connection, "the task's future is {size} bytes; a connection is {one_connection}");
    }
}
