//! `order-service`: load config → init telemetry → build → serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use order_service::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--print-config") => return print_config(),
        Some(other) => {
            eprintln!("order-service: unknown argument {other:?}\nusage: order-service [--print-config]");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("order-service: {e}");
            return ExitCode::from(2);
        }
    };
    // Metrics first: the span exporter registers its counters with the recorder.
    telemetry::metrics::install();
    let (tracer, traces) = telemetry::traces::start(&config.tracing).unzip();
    telemetry::logging::init(tracer);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("order-service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = app.run_until_stopped(shutdown_signal()).await;
    if let Some(traces) = traces {
        traces.shutdown(std::time::Duration::from_secs(2)).await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Every variable with the value this environment would run with, as one JSON object (passwords
/// redacted): what an operator checks, and where scripts read the defaults from.
fn print_config() -> ExitCode {
    match Config::effective(|name| std::env::var(name).ok()) {
        Ok(vars) => {
            println!("{}", serde_json::to_string_pretty(&vars).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("order-service: {e}");
            ExitCode::from(2)
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (container stop).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received; draining");
}
