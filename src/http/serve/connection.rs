//! One connection's life: hyper serves it while a watcher closes it when it has been idle too
//! long or the server shuts down, and its socket lingers before it is really closed.

use std::pin::pin;
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
    serve_until_closed(connection, &activity, timeouts, stop).await;
    if let Ok(stream) = given_back.await {
        linger.close(stream).await;
    }
    drop(slot);
}

async fn serve_until_closed(
    connection: Connection,
    activity: &Activity,
    timeouts: IdleTimeouts,
    mut stop: watch::Receiver<bool>,
) {
    let mut connection = pin!(connection);
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
