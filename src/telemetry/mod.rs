//! Logs and metrics.
//!
//! - [`context`] — request id and trace context, carried to upstream calls.
//! - [`logging`] — JSON lines or readable text, levels from `RUST_LOG`.
//! - [`log_line`] — the JSON line itself, written without re-parsing a span's fields.
//! - [`traces`] — OpenTelemetry traces over OTLP, W3C context in and out.
//! - [`metrics`] — every metric of docs/contracts.md: name, help, buckets and the recording helpers.

pub mod context;
pub mod log_line;
pub mod logging;
pub mod metrics;
pub mod traces;

pub use logging::init_logging;
