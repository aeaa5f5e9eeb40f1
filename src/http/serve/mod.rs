//! The accept loop: `axum::serve` plus what it leaves out, so that no client can hold a
//! connection, a task or a file handle for free.
//!
//! - a request head must arrive within `header_read_timeout` (slowloris);
//! - a connection that sends nothing is closed after `first_byte_timeout`, one with no request
//!   in flight (HTTP/1 keep-alive, HTTP/2 with no stream) after `idle_timeout`;
//! - at most `max_connections` are open; more are accepted and closed at once;
//! - a closing socket lingers ([`linger`]) so a client still writing reads our answer;
//! - on shutdown, idle connections close at once; those with a request in flight finish it.

mod activity;
mod connection;
mod linger;
mod slots;
mod tracked;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::HttpConfig;

use activity::{Activity, IdleTimeouts};
use connection::Watched;
use linger::Linger;
use slots::Slots;
use tracked::{TrackedIo, TrackedService};

/// HTTP/2 keep-alive: a PING after this long without a frame from the client…
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// …and the connection is dropped if the PING is not answered within this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection asked to close gracefully, with nothing in flight, may take to end.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn idle_timeouts(settings: &HttpConfig) -> IdleTimeouts {
    IdleTimeouts { first_byte: settings.first_byte_timeout, idle: settings.idle_timeout, grace: CLOSE_GRACE }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, closes idle
/// connections, lets each request in flight finish, and returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_PING_INTERVAL).keep_alive_timeout(H2_PING_TIMEOUT);
    let mut slots = Slots::new(settings.max_connections);
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = slots.take() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let (io, given_back) = TrackedIo::new(stream, activity.clone());
        let service = TrackedService::new(router.clone(), activity.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
        let watched = Watched { connection, activity, given_back, slot };
        tokio::spawn(connection::run(watched, idle_timeouts(settings), Linger::DEFAULT, stopping.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    slots.all_released().await;
    Ok(())
}
