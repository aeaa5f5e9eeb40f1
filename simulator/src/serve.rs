//! Listeners: each upstream's port (closed during an outage, reopened after) and the admin port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::server::{Sim, SimConfig, Which, router};

/// How often each upstream checks whether an outage began or ended (injected, lifted, expired).
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

/// Binds every port, then serves in the background on the current runtime.
pub async fn spawn(config: SimConfig) -> std::io::Result<RunningSim> {
    let sim = Arc::new(Sim::new(&config.catalogue));
    let users = TcpListener::bind(config.users_addr).await?;
    let products = TcpListener::bind(config.products_addr).await?;
    let admin = TcpListener::bind(config.admin_addr).await?;
    let (users_addr, products_addr, admin_addr) = (users.local_addr()?, products.local_addr()?, admin.local_addr()?);
    let admin_app = crate::admin::router(Arc::clone(&sim));
    let tasks = vec![
        tokio::spawn(supervise(users, Which::Users, Arc::clone(&sim))),
        tokio::spawn(supervise(products, Which::Products, Arc::clone(&sim))),
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, admin_app).await {
                tracing::error!(error = %e, "admin server stopped");
            }
        }),
    ];
    Ok(RunningSim { users_addr, products_addr, admin_addr, sim, tasks })
}

/// Serves one upstream; during an outage its listener is closed (connections refused) and
/// idle connections are closed, while requests in flight finish.
async fn supervise(listener: TcpListener, which: Which, sim: Arc<Sim>) {
    let app = router(Arc::clone(&sim), which);
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let mut serving = Some(serve(listener, app.clone()));
    loop {
        tokio::time::sleep(OUTAGE_POLL).await;
        let down = sim.faults.outage(which, Instant::now());
        match (down, serving.take()) {
            (true, Some(stop)) => {
                let _ = stop.send(());
                tracing::info!(?which, "outage: listener closed");
            }
            (false, None) => match TcpListener::bind(addr).await {
                Ok(listener) => {
                    serving = Some(serve(listener, app.clone()));
                    tracing::info!(?which, "outage over: listening again");
                }
                Err(e) => tracing::warn!(?which, error = %e, "cannot listen again yet"),
            },
            (_, still) => serving = still,
        }
    }
}

fn serve(listener: TcpListener, app: Router) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    stop
}
