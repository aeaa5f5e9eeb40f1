//! # upstream-sim
//!
//! Simulates user-service and product-service with the fault table of docs/contracts.md, on two
//! ports, so the order service can be run, tested and broken on purpose without the real ones.
//!
//! # Layout
//! - [`catalogue`] — the fault table as data (built-in JSON, replaceable by a file).
//! - [`server`] — the two upstreams' answers, bent by faults, and their call counters.
//! - [`faults`] — faults injected at run time, per upstream and optionally per key.
//! - [`admin`] — the admin API (faults, stats) on its own address.
//! - [`serve`] — listeners: upstream ports (closed during an outage) and the admin port.

pub mod admin;
pub mod catalogue;
pub mod faults;
pub mod serve;
pub mod server;

pub use catalogue::Catalogue;
pub use faults::{Fault, NewFault};
pub use serve::{RunningSim, spawn};
pub use server::{Sim, SimConfig, Stats, Which};
