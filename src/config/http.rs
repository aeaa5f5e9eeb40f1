//! `HTTP_*` and `METRICS_ADDR`: where the service listens and what a client may hold.

use std::net::SocketAddr;
use std::time::Duration;

use super::env::{ConfigError, Env};

/// The edge: listeners, body limits, in-flight limits and connection timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `HTTP_ADDR`: where the API (and `/metrics`, unless `METRICS_ADDR`) listens.
    pub addr: SocketAddr,
    /// `METRICS_ADDR`: when set, `/metrics` is served there (and not on the API port), so it can
    /// be bound to a private interface.
    pub metrics_addr: Option<SocketAddr>,
    /// `ADMIN_ADDR`: when set, the admin API (breakers, reload) and `/metrics` are served there,
    /// and `/metrics` no longer on the API port. Unset: no admin API at all.
    pub admin_addr: Option<SocketAddr>,
    /// `HTTP_BODY_LIMIT_BYTES`: larger request bodies get 413 before they are read.
    pub body_limit_bytes: usize,
    /// `HTTP_BODY_READ_TIMEOUT_MS`: a request body that has not fully arrived within this gets 408.
    pub body_read_timeout: Duration,
    /// `HTTP_MAX_IN_FLIGHT`: the most order writes (`POST /v1/…`) served at once before shedding
    /// with 503 — the ceiling of the adaptive limit (see [`LimitConfig`]); a body is read before
    /// its request counts here. The default, 128, is twice an upstream's bulkhead (64) plus room
    /// for orders waiting on the database pool: more in flight only queue for the pool and cost
    /// memory (bench/run: peak RSS with 1,000 connections 74 MiB at 512, 59–62 MiB at 128).
    pub max_in_flight: usize,
    /// The writes' adaptive limit: `HTTP_CONCURRENCY_ALGORITHM`, `HTTP_MIN_IN_FLIGHT`, and
    /// `HTTP_MAX_IN_FLIGHT` as its ceiling.
    pub write_limit: LimitConfig,
    /// `HTTP_SHED_DELAY_MS`: a shed request's 503 is decided at once but sent this much later
    /// (0 = at once). A client that re-sends the moment it is refused then costs a timer
    /// instead of a spin: without it, 448 such connections kept the two cores busy with
    /// refusals and the orders' goodput fell to 0.15 × capacity. 250 ms, not 100: four re-sends a
    /// second per connection instead of ten gave 8× goodput 0.88–0.93 instead of 0.80–0.85 ×
    /// capacity (docs/overload.md, third session).
    pub shed_delay: Duration,
    /// `HTTP_MAX_READS_IN_FLIGHT`: `GET /v1/…` requests served at once, a limit apart from
    /// writes so a flood of orders cannot starve reads (nor the reverse).
    pub max_reads_in_flight: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`: a connection that has not sent a whole request head within
    /// this is closed (slowloris); hyper also times an HTTP/1 connection's wait for its next head
    /// with it, so it bounds HTTP/1 keep-alive too.
    pub header_read_timeout: Duration,
    /// `HTTP_FIRST_BYTE_TIMEOUT_MS`: a connection that has sent nothing within this is closed.
    pub first_byte_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_MS`: a connection with no request in flight for this long (HTTP/1
    /// keep-alive, HTTP/2 with no stream) is closed.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections open at once (lingering ones included); more are
    /// accepted and closed at once. Below the process's file limit, so `accept` never fails.
    pub max_connections: usize,
}

impl HttpConfig {
    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let optional_addr = |var: &str| {
            env.record_optional(var, env.get(var).map(|_| env.parse(var, "", "expected host:port")).transpose())
        };
        let metrics_addr: Option<SocketAddr> = optional_addr("METRICS_ADDR")?;
        let admin_addr = optional_addr("ADMIN_ADDR")?;
        if admin_addr.is_some() && admin_addr == metrics_addr {
            let reason = "the same address as ADMIN_ADDR, which serves /metrics too: unset METRICS_ADDR".to_owned();
            return Err(super::env::invalid("METRICS_ADDR", reason));
        }
        let max_in_flight = env.number("HTTP_MAX_IN_FLIGHT", 128, 1..=1_000_000)?;
        Ok(Self {
            addr: env.parse("HTTP_ADDR", "127.0.0.1:8000", "expected host:port")?,
            metrics_addr,
            admin_addr,
            body_limit_bytes: env.number("HTTP_BODY_LIMIT_BYTES", 16 * 1024, 256..=1 << 24)?,
            body_read_timeout: env.millis("HTTP_BODY_READ_TIMEOUT_MS", 10_000)?,
            max_in_flight,
            write_limit: LimitConfig {
                algorithm: env.parse(
                    "HTTP_CONCURRENCY_ALGORITHM",
                    // Measured against `fixed` on a quiet machine: docs/overload.md.
                    "gradient2",
                    "one of gradient2, vegas, aimd, fixed",
                )?,
                min: env.number("HTTP_MIN_IN_FLIGHT", 64, 1..=1_000_000)?.min(max_in_flight),
                max: max_in_flight,
            },
            shed_delay: Duration::from_millis(env.number("HTTP_SHED_DELAY_MS", 250, 0..=10_000)?),
            max_reads_in_flight: env.number("HTTP_MAX_READS_IN_FLIGHT", 128, 1..=1_000_000)?,
            header_read_timeout: env.millis("HTTP_HEADER_READ_TIMEOUT_MS", 30_000)?,
            first_byte_timeout: env.millis("HTTP_FIRST_BYTE_TIMEOUT_MS", 10_000)?,
            idle_timeout: env.millis("HTTP_IDLE_TIMEOUT_MS", 60_000)?,
            max_connections: env.number("HTTP_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
        })
    }
}

/// How the writes' in-flight limit moves. It starts at the ceiling and follows the latency of
/// the orders it admits: the algorithm lowers it when they queue (their latency grows) and
/// raises it again as they speed up, never past `HTTP_MAX_IN_FLIGHT`, never under the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// `HTTP_CONCURRENCY_ALGORITHM`.
    pub algorithm: LimitAlgorithm,
    /// `HTTP_MIN_IN_FLIGHT`: the floor (capped at the ceiling), so a burst of slow answers
    /// cannot shrink the limit below what the service needs to reach its capacity. 64, the
    /// concurrency that saturates it here: with 16, a limit that had learnt a quiet service's
    /// latency refused 6 % of orders at 64 connections and lost a quarter of the capacity
    /// (docs/overload.md, fourth session).
    pub min: usize,
    /// `HTTP_MAX_IN_FLIGHT`: the ceiling, and the starting value.
    pub max: usize,
}

/// The algorithms of `tower-acc` (Netflix's concurrency-limits, in Rust), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAlgorithm {
    /// Netflix's Gradient2: lowers the limit when the latency of the last answer exceeds 1.5 ×
    /// its long-run average; no fixed baseline, so it cannot stick low when the floor rises.
    Gradient2,
    /// TCP Vegas: estimates the queue from the lowest latency seen (re-probed now and then).
    Vegas,
    /// Additive increase, multiplicative decrease on errors and answers slower than 1 s.
    Aimd,
    /// Always `HTTP_MAX_IN_FLIGHT` (the behaviour before the adaptive limit).
    Fixed,
}

impl std::str::FromStr for LimitAlgorithm {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "gradient2" => Ok(Self::Gradient2),
            "vegas" => Ok(Self::Vegas),
            "aimd" => Ok(Self::Aimd),
            "fixed" => Ok(Self::Fixed),
            _ => Err(()),
        }
    }
}

/// `SHUTDOWN_*`: how SIGTERM drains (see `Application::run_until_stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// `SHUTDOWN_DELAY_MS`: after SIGTERM, keep serving (unready) this long before closing, so
    /// load balancers notice first.
    pub delay: Duration,
    /// `SHUTDOWN_DRAIN_TIMEOUT_MS`: the longest in-flight requests may take to finish.
    pub drain_timeout: Duration,
}

impl ShutdownConfig {
    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            delay: Duration::from_millis(env.number("SHUTDOWN_DELAY_MS", 0, 0..=600_000)?),
            drain_timeout: env.millis("SHUTDOWN_DRAIN_TIMEOUT_MS", 10_000)?,
        })
    }
}
