//! Reloading the resilience settings (`POST /admin/reload`, `SIGHUP`): the environment file is
//! read again, the whole configuration validated as at start-up, and only then the reloadable
//! part put in force — each upstream's stack rebuilt over its kept state, the order deadline
//! set. Lookups in flight finish on the stack they started with, so no request is dropped.

use std::sync::Mutex;

use crate::config::{Config, is_reloadable};
use crate::domain::{OrderService, Product, User};
use crate::ops::{Reload, ReloadReport, SettingChange};
use crate::telemetry::metrics;
use crate::upstream::UpstreamClient;

/// Every `config_reloads_total{result}`.
pub const RESULTS: [&str; 3] = ["applied", "unchanged", "invalid"];

pub struct Reloader {
    /// The settings in force (for what is not reloadable: those the process started with).
    current: Mutex<Config>,
    users: UpstreamClient<User>,
    products: UpstreamClient<Product>,
    orders: OrderService,
}

impl Reloader {
    pub fn new(
        config: Config,
        users: UpstreamClient<User>,
        products: UpstreamClient<Product>,
        orders: OrderService,
    ) -> Self {
        metrics::config_reloads_registered(&RESULTS);
        Self { current: Mutex::new(config), users, products, orders }
    }
}

impl Reload for Reloader {
    fn reload(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = match current.reread() {
            Ok(next) => next,
            Err(error) => {
                metrics::config_reload("invalid");
                tracing::warn!(trigger, %error, "reload refused: the settings in force are kept");
                return Err(error.to_string());
            }
        };
        let report = compare(&current, &next);
        if next.upstreams.user.stack != current.upstreams.user.stack {
            self.users.reconfigure(&next.upstreams.user.stack);
        }
        if next.upstreams.product.stack != current.upstreams.product.stack {
            self.products.reconfigure(&next.upstreams.product.stack);
        }
        self.orders.set_deadline(next.orders.deadline);
        current.upstreams.user.stack = next.upstreams.user.stack;
        current.upstreams.product.stack = next.upstreams.product.stack;
        current.orders.deadline = next.orders.deadline;
        for change in &report.changed {
            current.values.insert(change.variable.clone(), change.to.clone());
            tracing::warn!(
                trigger,
                variable = change.variable,
                from = change.from.as_deref().unwrap_or("unset"),
                to = change.to.as_deref().unwrap_or("unset"),
                "setting reloaded"
            );
        }
        if !report.restart_required.is_empty() {
            let variables = report.restart_required.join(",");
            tracing::warn!(trigger, variables, "changed settings that only a restart applies were ignored");
        }
        let result = if report.changed.is_empty() { "unchanged" } else { "applied" };
        metrics::config_reload(result);
        tracing::info!(trigger, result, changed = report.changed.len(), "settings reloaded");
        Ok(report)
    }
}

/// What differs between the settings in force and the ones just read.
fn compare(current: &Config, next: &Config) -> ReloadReport {
    let mut report = ReloadReport::default();
    for (variable, to) in &next.values {
        let from = current.values.get(variable).cloned().flatten();
        if from == *to {
            continue;
        }
        if is_reloadable(variable) {
            report.changed.push(SettingChange { variable: variable.clone(), from, to: to.clone() });
        } else {
            report.restart_required.push(variable.clone());
        }
    }
    report
}
