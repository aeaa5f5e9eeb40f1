//! # upstream-sim
//!
//! Simulates user-service and product-service with the fault table of DESIGN.md, on two
//! ports, so the order service can be run, tested and broken on purpose without the real ones.
//!
//! # Layout
//! - [`catalogue`] — the fault table as data (built-in JSON, replaceable by a file).
//! - [`server`] — the two HTTP servers, their call counters and `/__admin` endpoints.

pub mod catalogue;
pub mod server;

pub use catalogue::Catalogue;
pub use server::{RunningSim, Sim, SimConfig, Stats, spawn};
