//! # order-service
//!
//! An order API that stays fast and correct while the services it depends on are slow, flaky
//! or down. See `README.md` for running it and `../shared/DESIGN.md` for the contracts.
//!
//! # Layout (in the order a request flows through it)
//!
//! - [`config`] — one typed `Config` from the environment.
//! - [`http`] — axum routes, extractors, problem+json errors, health, OpenAPI.
//! - [`domain`] — ids, money, orders and the place-order use case.
//! - [`upstream`] — user-service and product-service clients over one tower stack each.
//! - [`storage`] — the `OrderStore` trait, PostgreSQL and SQLite; order + outbox row in one tx.
//! - [`outbox`] — the relay: outbox rows to RabbitMQ with publisher confirms, at-least-once.
//! - [`telemetry`] — logging and metrics.
//! - [`startup`] — builds the `Application` from a `Config` and runs it.

pub mod backoff;
pub mod config;
pub mod domain;
pub mod http;
pub mod ops;
pub mod relay;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use startup::Application;
