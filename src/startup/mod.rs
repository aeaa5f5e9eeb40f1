//! Wires config into a running application: store, upstream clients, router, listeners (the
//! API, and `/metrics` or the admin API when they have addresses of their own); [`reload`]
//! puts new resilience settings in force.

pub mod reload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Backend, Config, DatabaseConfig, HttpConfig, ShutdownConfig};
use crate::domain::idempotency::purge_forever;
use crate::domain::{Lookup, OrderService, OrderStore, OutboxStore, Product, StoreError, Upstream, User};
use crate::http::admin::admin_router;
use crate::http::{AppState, metrics_router, router, serve};
use crate::ops::{BreakerPanel, Reload};
use crate::relay::{self, NotifyingStore, Relay, RelayHandle, publisher::Amqp};
use crate::storage;
use crate::telemetry;
use crate::upstream::{stack, transport};

/// How often forgotten idempotency keys are deleted (they are ignored as soon as they expire).
const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built application, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// `/metrics` on its own address (`METRICS_ADDR`), when configured.
    metrics: Option<(TcpListener, Router)>,
    /// The admin API and `/metrics` (`ADMIN_ADDR`), when configured.
    admin: Option<(TcpListener, Router)>,
    reloader: Arc<reload::Reloader>,
    http: HttpConfig,
    store: Arc<dyn OrderStore>,
    outbox: Arc<dyn OutboxStore>,
    /// Built in `build`, spawned by `run_until_stopped`; `None` when no `AMQP_URL` is set.
    relay: Option<(Relay, Arc<tokio::sync::Notify>)>,
    /// Where the relay listens for other replicas' announcements (PostgreSQL with a relay).
    listen: Option<DatabaseConfig>,
    /// How often `outbox_pending` is counted when there is no relay to count it.
    outbox_pending_interval: Duration,
    draining: Arc<AtomicBool>,
    shutdown: ShutdownConfig,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
}

impl Application {
    /// Builds every adapter from its part of `config` and wires them into the use case and the
    /// router: the one place that knows them all.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let stores = storage::connect(&config.database).await?;
        let relay = config.broker.amqp_url.clone().map(|url| {
            let wake = Arc::new(tokio::sync::Notify::new());
            (Relay::new(Arc::clone(&stores.outbox), Arc::new(Amqp { url }), config.broker.relay), wake)
        });
        let local = relay.as_ref().map(|(relay, wake)| (Arc::clone(wake), relay.status()));
        let store: Arc<dyn OrderStore> =
            Arc::new(NotifyingStore::new(stores.orders, Arc::clone(&stores.outbox), local));
        let listen = (config.database.backend == Backend::Postgres && relay.is_some()).then(|| config.database.clone());
        let http = transport::http_client();
        let metrics = telemetry::metrics::install();
        telemetry::metrics::orders_registered(&crate::http::error::SLUGS);
        let upstreams = &config.upstreams;
        let (user_client, user_breakers) =
            stack::build::<User>(http.clone(), Upstream::User, upstreams.user.url.clone(), &upstreams.user.stack);
        let (product_client, product_breakers) =
            stack::build::<Product>(http, Upstream::Product, upstreams.product.url.clone(), &upstreams.product.stack);
        let (users, products): (Arc<dyn Lookup<User>>, Arc<dyn Lookup<Product>>) =
            (Arc::new(user_client.clone()), Arc::new(product_client.clone()));
        let orders = OrderService::new(users, products, Arc::clone(&store), config.orders.deadline);
        let reloader = Arc::new(reload::Reloader::new(config.clone(), user_client, product_client, orders.clone()));
        let breakers: Vec<Arc<dyn BreakerPanel>> = vec![Arc::new(user_breakers), Arc::new(product_breakers)];
        let draining = Arc::new(AtomicBool::new(false));
        let state = AppState {
            orders,
            store: Arc::clone(&store),
            relay: relay.as_ref().map(|(relay, _)| relay.status()),
            breakers,
            metrics,
            draining: Arc::clone(&draining),
            keys: config.orders.idempotency,
            replays: crate::http::replays::CompletedKeys::new(&config.orders.idempotency),
        };
        let listener = bind(config.http.addr).await?;
        let metrics = match config.http.metrics_addr {
            Some(addr) => Some((bind(addr).await?, metrics_router(state.clone()))),
            None => None,
        };
        let admin = match config.http.admin_addr {
            Some(addr) => {
                let reload: Arc<dyn Reload> = Arc::clone(&reloader) as Arc<dyn Reload>;
                Some((bind(addr).await?, admin_router(state.clone(), reload)))
            }
            None => None,
        };
        let router = router(state, &config.http, metrics.is_none() && admin.is_none());
        Ok(Self {
            listener,
            router,
            metrics,
            admin,
            reloader,
            http: config.http,
            store,
            outbox: stores.outbox,
            relay,
            listen,
            outbox_pending_interval: config.broker.pending_interval,
            draining,
            shutdown: config.shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Where `/metrics` is served when `METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Where the admin API is served when `ADMIN_ADDR` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Reloads the resilience settings, as `POST /admin/reload` does: what `SIGHUP` calls.
    pub fn reloader(&self) -> Arc<dyn Reload> {
        Arc::clone(&self.reloader) as Arc<dyn Reload>
    }

    pub fn store(&self) -> Arc<dyn OrderStore> {
        Arc::clone(&self.store)
    }

    /// Serves until `shutdown` resolves, then shuts down the Kubernetes way: readiness turns
    /// false at once; requests are still served for `SHUTDOWN_DELAY_MS` (while load balancers
    /// notice); then the listener closes, idle connections close at once and in-flight requests
    /// finish, for at most `SHUTDOWN_DRAIN_TIMEOUT_MS`; last, the relay finishes its batch and
    /// stops (so the last orders' events still leave if the broker is up; pending rows wait for
    /// the next start).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), backend = self.store.backend(), "order-service listening");
        let listener = match (&self.relay, self.listen) {
            (Some((_, wake)), Some(database)) => {
                Some(tokio::spawn(storage::listen_forever(database, Arc::clone(wake))))
            }
            _ => None,
        };
        let relay: Option<RelayHandle> = self.relay.map(|(relay, wake)| relay.spawn(wake));
        // Without a relay nobody else counts the backlog, which then only grows.
        let pending = relay
            .is_none()
            .then(|| tokio::spawn(relay::pending::count_forever(self.outbox, self.outbox_pending_interval)));
        let purge = tokio::spawn(purge_forever(Arc::clone(&self.store), KEY_PURGE_INTERVAL));
        let (draining, settings) = (self.draining, self.shutdown);
        let (closing, closed) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            draining.store(true, Ordering::Relaxed);
            tracing::info!(delay_ms = settings.delay.as_millis() as u64, "shutting down: readiness is now false");
            tokio::time::sleep(settings.delay).await;
            tracing::info!("listener closed; draining in-flight requests");
            let _ = closing.send(());
        };
        // `/metrics` (and the admin API) stay up until the very end, so the drain itself can be
        // watched.
        let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
        let side: Vec<_> = self
            .metrics
            .into_iter()
            .chain(self.admin)
            .map(|(listener, router)| {
                let http = self.http.clone();
                let mut stopped = metrics_stopped.clone();
                let stopped = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                tokio::spawn(async move { serve::serve(listener, router, &http, stopped).await })
            })
            .collect();
        let serve = serve::serve(self.listener, self.router, &self.http, graceful);
        let drain_deadline = async move {
            if closed.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(settings.drain_timeout).await;
        };
        let served = tokio::select! {
            served = serve => served,
            () = drain_deadline => {
                tracing::warn!("drain timeout: closing the connections still open");
                Ok(())
            }
        };
        purge.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        if let Some(pending) = pending {
            pending.abort();
        }
        if let Some(relay) = relay {
            relay.stop().await;
        }
        let _ = metrics_stop.send(true);
        for listener in side {
            let _ = listener.await;
        }
        tracing::info!("stopped");
        served
    }
}
