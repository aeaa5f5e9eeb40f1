//! `order-service`: load config → init telemetry → build → serve until SIGINT/SIGTERM;
//! SIGHUP reloads the resilience settings (as `POST /admin/reload` does).

use std::process::ExitCode;

use std::sync::Arc;

use order_service::ops::Reload;
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
    // Before anything slow: SIGHUP's default action would end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
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
    match hangups {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(hangups, app.reloader()));
        }
        Err(e) => tracing::warn!(error = %e, "SIGHUP cannot be handled; reload through the admin API"),
    }
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

/// Each SIGHUP reloads the resilience settings; the reloader logs and counts the outcome.
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, reloader: Arc<dyn Reload>) {
    while hangups.recv().await.is_some() {
        let reloader = Arc::clone(&reloader);
        let _ = tokio::task::spawn_blocking(move || reloader.reload("sighup")).await;
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
