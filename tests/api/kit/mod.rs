//! The shared test kit, one file per responsibility:
//!
//! - `db`: a database of its own per test (PostgreSQL or SQLite), inspected or sabotaged directly;
//! - `upstreams`: the simulator in-process, or wiremock servers when a test counts calls;
//! - `app`: the real application in-process on a random port, and the problem+json reader;
//! - `binary`: the real `order-service` process, for signals, kills and its logs;
//! - `broker`: a queue of the test's own on the real RabbitMQ, and a relay of the test's own;
//! - `proxy`: a TCP proxy that cuts PostgreSQL or RabbitMQ for one test only;
//! - `pgbouncer`: a PgBouncer of the test's own in transaction pooling mode;
//! - `raw_http`: bytes on a socket, for what reqwest would refuse or tidy;
//! - `metrics`: `/metrics` text read as a dashboard reads it;
//! - `wait`: polling for what happens asynchronously, bounded, without timing assertions.
//!
//! Tests import from `crate::kit` directly; the files are the kit's own business.

mod app;
mod binary;
mod broker;
mod db;
mod metrics;
mod otlp;
mod pgbouncer;
mod proxy;
mod raw_http;
mod upstreams;
mod wait;

pub use app::{TestApp, order_ids, problem};
pub use binary::{Output, TestBinary};
pub use broker::{BROKER, TestConsumer, amqp_url, broker_relay, declare_orders_exchange, message_id, new_relay};
pub use db::{Backend, TestDb, sample_order};
pub use metrics::{label_values, sample, series};
pub use otlp::{Collector, ReceivedSpan};
pub use pgbouncer::PgBouncer;
pub use proxy::CutProxy;
pub use raw_http::{RawConnection, RawResponse, read_until_closed, unfinished_body, unfinished_head};
pub use upstreams::{ADA, Upstreams, requests_to};
pub use wait::eventually;

/// Declares `async fn name(backend)` tests once, run on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name($crate::kit::Backend::Postgres).await } )*
        }
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name($crate::kit::Backend::Sqlite).await } )*
        }
    };
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
