//! `upstream-sim`: serves the simulated user-service and product-service until stopped.
//!
//! Environment: `SIM_USERS_ADDR` (default 127.0.0.1:8082), `SIM_PRODUCTS_ADDR`
//! (default 127.0.0.1:8081), `SIM_ADMIN_ADDR` (default 127.0.0.1:8083), `SIM_CATALOGUE` (a JSON file; default the built-in fault table),
//! `SIM_HONOUR_DEADLINE` (default `1`; `0` works on past the caller's `x-envoy-expected-rq-timeout-ms`).

use std::net::SocketAddr;
use std::process::ExitCode;

use upstream_sim::{Catalogue, SimConfig};

fn addr(var: &str, default: &str) -> Result<SocketAddr, String> {
    let raw = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    raw.parse().map_err(|_| format!("invalid {var}: expected host:port, got {raw:?}"))
}

fn config() -> Result<SimConfig, String> {
    let catalogue = match std::env::var("SIM_CATALOGUE") {
        Ok(path) => Catalogue::load(&path).map_err(|e| format!("invalid SIM_CATALOGUE: {e}"))?,
        Err(_) => Catalogue::builtin(),
    };
    Ok(SimConfig {
        users_addr: addr("SIM_USERS_ADDR", "127.0.0.1:8082")?,
        products_addr: addr("SIM_PRODUCTS_ADDR", "127.0.0.1:8081")?,
        admin_addr: addr("SIM_ADMIN_ADDR", "127.0.0.1:8083")?,
        catalogue,
        honour_deadline: match std::env::var("SIM_HONOUR_DEADLINE").as_deref() {
            Ok("0") => false,
            Ok("1") | Err(_) => true,
            Ok(other) => return Err(format!("invalid SIM_HONOUR_DEADLINE: expected 0 or 1, got {other:?}")),
        },
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("upstream-sim: {message}");
            return ExitCode::from(2);
        }
    };
    let mut sim = match upstream_sim::spawn(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("upstream-sim: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(users = %sim.users_addr, products = %sim.products_addr, admin = %sim.admin_addr, "upstream-sim serving");
    tokio::select! {
        _ = sim.wait() => ExitCode::FAILURE,
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
