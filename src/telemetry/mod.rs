//! Logs and metrics.
//!
//! - [`logging`] — JSON lines or readable text, levels from `RUST_LOG`.
//! - [`metrics`] — every metric of DESIGN.md: name, help, buckets and the recording helpers.

pub mod logging;
pub mod metrics;

pub use logging::init_logging;
