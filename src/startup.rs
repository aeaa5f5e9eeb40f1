//! Wires config into a running application: store, upstream clients, router, listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::{OrderService, Product, User};
use crate::http::{AppState, HttpLimits, router};
use crate::outbox::{NotifyingStore, Relay, RelayHandle};
use crate::storage::{self, OrderStore, PoolSettings, StoreError};
use crate::telemetry;
use crate::upstream::{Upstream, stack, transport};

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
    store: Arc<dyn OrderStore>,
    /// Built in `build`, spawned by `run_until_stopped`; `None` when no `AMQP_URL` is set.
    relay: Option<(Relay, Arc<tokio::sync::Notify>)>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let pool = PoolSettings {
            max_connections: config.database_max_connections,
            acquire_timeout: config.database_acquire_timeout,
        };
        let mut store = storage::connect(&config.database_url, pool).await?;
        let relay = config.amqp_url.clone().map(|url| {
            let wake = Arc::new(tokio::sync::Notify::new());
            (Relay::new(store.outbox(), url, config.relay), wake)
        });
        if let Some((_, wake)) = &relay {
            store = Arc::new(NotifyingStore::new(store, Arc::clone(wake)));
        }
        let http = transport::http_client();
        let metrics = telemetry::metrics::install();
        let (users, user_breakers) =
            stack::build::<User>(http.clone(), Upstream::User, config.user_service_url.clone(), &config.user_stack);
        let (products, product_breakers) =
            stack::build::<Product>(http, Upstream::Product, config.product_service_url.clone(), &config.product_stack);
        let orders = OrderService::new(users, products, Arc::clone(&store), config.order_deadline);
        let state = AppState {
            orders,
            store: Arc::clone(&store),
            relay: relay.as_ref().map(|(relay, _)| relay.status()),
            breakers: vec![user_breakers, product_breakers],
            metrics,
        };
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.http_addr, source })?;
        let limits = HttpLimits { body_limit_bytes: config.body_limit_bytes, max_in_flight: config.max_in_flight };
        Ok(Self { listener, router: router(state, limits), store, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn store(&self) -> Arc<dyn OrderStore> {
        Arc::clone(&self.store)
    }

    /// Starts the relay (if configured) and serves until `shutdown` resolves; then lets
    /// in-flight requests finish, and only then stops the relay after its batch in flight, so
    /// the last orders' events still leave if the broker is up. Pending rows wait for the next start.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), backend = self.store.backend(), "order-service listening");
        let relay: Option<RelayHandle> = self.relay.map(|(relay, wake)| relay.spawn(wake));
        let served = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await;
        if let Some(relay) = relay {
            relay.stop().await;
        }
        served
    }
}
