//! # order-service
//!
//! An order API that stays fast and correct while the services it depends on are slow, flaky
//! or down. See `README.md` for running it, `docs/contracts.md` for the contracts and
//! `docs/architecture.md` for the module map and the allowed direction of imports.
//!
//! # Layout (in the order a request flows through it)
//!
//! - [`http`] — the edge: accept loop and connection limits, admission, routes, extractors,
//!   problem+json errors, health, OpenAPI and `/docs`.
//! - [`domain`] — ids, money, orders, idempotency rules, the place-order use case, and the
//!   ports it needs: [`domain::lookup`], [`domain::store`], [`domain::outbox`].
//! - [`upstream`] — the lookup port over one tower stack per upstream.
//! - [`storage`] — the store and outbox ports on PostgreSQL and SQLite.
//! - [`relay`] — outbox rows to RabbitMQ with publisher confirms, at-least-once.
//! - [`ops`] — breaker and broker status, published by the adapters, read by readiness.
//! - [`config`], [`backoff`], [`telemetry`] — leaves: settings, shared backoff, logs and metrics.
//! - [`startup`] — the one place that builds the adapters and wires them in.

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
