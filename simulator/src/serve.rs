//! Listeners: each upstream's port (closed during an outage, reopened after) and the admin port.
//!
//! An outage is what a real one is: the port refuses connections and every open connection is
//! closed, idle or busy. The admin API waits for both before it answers ([`Supervisors::enforce`]),
//! so a chaos script's outage is in force when the script returns; restoring reopens the port
//! before answering too. An outage that lifts itself (`duration_ms`) is noticed within
//! `OUTAGE_POLL`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::server::{Sim, SimConfig, Which, router};

/// How often each upstream checks whether an outage began or ended by itself (expired).
const OUTAGE_POLL: Duration = Duration::from_millis(20);

/// A running simulator; dropping it stops every server.
#[derive(Debug)]
pub struct RunningSim {
    pub users_addr: SocketAddr,
    pub products_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub sim: Arc<Sim>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSim {
    pub fn users_url(&self) -> String {
        format!("http://{}", self.users_addr)
    }

    pub fn products_url(&self) -> String {
        format!("http://{}", self.products_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Resolves when the admin server stops (only on an I/O error).
    pub async fn wait(&mut self) {
        if let Some(admin) = self.tasks.last_mut() {
            let _ = admin.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The upstreams' supervisors, as the admin API reaches them.
#[derive(Debug, Clone, Default)]
pub struct Supervisors {
    asks: Vec<mpsc::UnboundedSender<oneshot::Sender<()>>>,
}

impl Supervisors {
    /// Brings every upstream's listener and connections in line with the faults now active
    /// (closing or reopening the port) and returns once that is done.
    pub async fn enforce(&self) {
        let mut done = Vec::with_capacity(self.asks.len());
        for ask in &self.asks {
            let (ack, acked) = oneshot::channel();
            if ask.send(ack).is_ok() {
                done.push(acked);
            }
        }
        for acked in done {
            let _ = acked.await;
        }
    }
}

/// Binds every port, then serves in the background on the current runtime.
pub async fn spawn(config: SimConfig) -> std::io::Result<RunningSim> {
    let sim = Arc::new(Sim::new(&config.catalogue, config.honour_deadline));
    let users = TcpListener::bind(config.users_addr).await?;
    let products = TcpListener::bind(config.products_addr).await?;
    let admin = TcpListener::bind(config.admin_addr).await?;
    let (users_addr, products_addr, admin_addr) = (users.local_addr()?, products.local_addr()?, admin.local_addr()?);
    let (users_ask, users_asked) = mpsc::unbounded_channel();
    let (products_ask, products_asked) = mpsc::unbounded_channel();
    let supervisors = Supervisors { asks: vec![users_ask, products_ask] };
    let admin_app = crate::admin::router(Arc::clone(&sim), supervisors);
    let tasks = vec![
        tokio::spawn(supervise(users, Which::Users, Arc::clone(&sim), users_asked)),
        tokio::spawn(supervise(products, Which::Products, Arc::clone(&sim), products_asked)),
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, admin_app).await {
                tracing::error!(error = %e, "admin server stopped");
            }
        }),
    ];
    Ok(RunningSim { users_addr, products_addr, admin_addr, sim, tasks })
}

/// Serves one upstream, closing its port and every connection while it is in an outage.
/// Reconciles every `OUTAGE_POLL`, and at once when the admin API asks (then acknowledges).
async fn supervise(
    listener: TcpListener,
    which: Which,
    sim: Arc<Sim>,
    mut asked: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let app = router(Arc::clone(&sim), which);
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut serving = Some(Serving::start(listener, app.clone()));
    loop {
        let ack = tokio::select! {
            () = tokio::time::sleep(OUTAGE_POLL) => None,
            ask = asked.recv() => ask,
        };
        let down = sim.faults.outage(which, Instant::now());
        match (down, serving.take()) {
            (true, Some(running)) => {
                running.stop().await;
                tracing::info!(?which, "outage: listener and every connection closed");
            }
            (false, None) => match TcpListener::bind(addr).await {
                Ok(listener) => {
                    serving = Some(Serving::start(listener, app.clone()));
                    tracing::info!(?which, "outage over: listening again");
                }
                Err(e) => tracing::warn!(?which, error = %e, "cannot listen again yet"),
            },
            (_, still) => serving = still,
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

/// One listener and the connections it accepted.
struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    fn start(listener: TcpListener, app: Router) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self { stop, task: tokio::spawn(accept(listener, app, stopped)) }
    }

    /// Closes the listener and every connection (requests in flight are cut), and returns
    /// once all of them are closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept(listener: TcpListener, app: Router, mut stopped: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting drops each connection's socket: idle and busy ones alike are closed.
    connections.shutdown().await;
}

async fn connection(stream: TcpStream, app: Router) {
    let service = TowerToHyperService::new(app);
    let served = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
