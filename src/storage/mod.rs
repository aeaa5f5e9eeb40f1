//! Where orders live: the domain's [`OrderStore`] and [`OutboxStore`] ports on PostgreSQL and on
//! SQLite, chosen by the `DATABASE_URL` scheme. Migrations for each backend are under
//! `migrations/` and run at start; on PostgreSQL, [`listen_forever`] wakes the relay when
//! another replica announces new outbox rows.

mod group;
mod keys;
mod listen;
mod pg_insert;
mod postgres;
mod row;
mod sql;
mod sqlite;
mod warm;

use std::sync::Arc;

use crate::config::{Backend, DatabaseConfig};
use crate::domain::{OrderStore, OutboxStore, StoreError};

pub use listen::listen_forever;
pub use postgres::{OUTBOX_CHANNEL, PgStore};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(Box::new(error))
        } else {
            StoreError::Query(Box::new(error))
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // Broken or unreachable connections: `Protocol` is what a connection cut mid-handshake
        // or mid-reply looks like (e.g. "unexpected response from SSLRequest").
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08…), shutting down / cannot connect now (57P…),
            // too many connections (53300). SQLite: busy / locked (5, 6).
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "5" || code == "6"
        }
        _ => false,
    }
}

/// Both ports over one pool.
#[derive(Clone)]
pub struct Stores {
    pub orders: Arc<dyn OrderStore>,
    pub outbox: Arc<dyn OutboxStore>,
}

/// Opens the store `config` names and brings its schema up to date.
pub async fn connect(config: &DatabaseConfig) -> Result<Stores, StoreError> {
    match config.backend {
        Backend::Sqlite => {
            let store = SqliteStore::connect(config).await?;
            Ok(Stores { orders: Arc::new(store.clone()), outbox: Arc::new(store) })
        }
        Backend::Postgres => {
            let store = PgStore::connect(config).await?;
            Ok(Stores { orders: Arc::new(store.clone()), outbox: Arc::new(store) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_exhaustion_and_io_are_unavailable_not_bugs() {
        assert!(matches!(StoreError::from(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(StoreError::from(sqlx::Error::Io(io)), StoreError::Unavailable(_)));
        let cut = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(matches!(StoreError::from(cut), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::RowNotFound), StoreError::Query(_)));
        assert!(matches!(StoreError::from(sqlx::Error::ColumnNotFound("x".into())), StoreError::Query(_)));
    }
}
