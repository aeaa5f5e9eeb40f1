//! One integration-test binary: each test starts the real application on a random port with a
//! database of its own (PostgreSQL or SQLite), so tests run in parallel.

mod admin;
mod bench;
mod crash;
mod database_outage;
mod docs;
mod edge;
mod fleet;
mod group_commit;
mod health;
mod hostile_edge;
mod hostile_labels;
mod hostile_misc;
mod hostile_upstream;
mod idempotency;
mod kit;
mod logs;
mod migrations;
mod orders;
mod outage;
mod outbox;
mod overload;
mod pooler;
mod resilience;
mod restart;
mod secrets;
mod shutdown;
mod stale;
mod tail;
mod traces;
mod traces_outbox;
mod use_cases;
mod validation;
