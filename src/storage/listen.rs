//! Other replicas' commits wake this replica's relay: `LISTEN` on PostgreSQL over
//! `DATABASE_SESSION_URL` (a transaction pooler cannot keep a `LISTEN`), each notification on
//! the outbox channel ([`OutboxStore::announce`](crate::domain::OutboxStore::announce)) wakes
//! the relay. A lost connection is made again with a capped backoff; after each (re)connect
//! the relay is woken once, for what was announced while nobody listened. The relay's poll
//! stays the fallback throughout.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::postgres::{OUTBOX_CHANNEL, options};
use crate::config::DatabaseConfig;

/// First and longest pause between attempts to listen again.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Listens until the task is dropped; never returns.
pub async fn listen_forever(config: DatabaseConfig, wake: Arc<Notify>) {
    let mut pause = RETRY.0;
    loop {
        let error = listen(&config, &wake, &mut pause).await;
        tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "outbox listener lost the database");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY.1);
    }
}

/// One listening session, until it fails to (re)connect; `pause` starts over once listening.
async fn listen(config: &DatabaseConfig, wake: &Notify, pause: &mut Duration) -> sqlx::Error {
    match session(config, wake, pause).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn session(
    config: &DatabaseConfig,
    wake: &Notify,
    pause: &mut Duration,
) -> Result<std::convert::Infallible, sqlx::Error> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(options(&config.session_url, 0).map_err(|e| sqlx::Error::Configuration(e.into()))?);
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    tracing::info!("outbox listener listening");
    *pause = RETRY.0;
    wake.notify_one();
    loop {
        match listener.try_recv().await? {
            Some(_) => wake.notify_one(),
            // Lost and made again (sqlx re-listens): what was announced meanwhile is not
            // replayed, so wake the relay once.
            None => {
                tracing::info!("outbox listener reconnected");
                wake.notify_one();
            }
        }
    }
}
