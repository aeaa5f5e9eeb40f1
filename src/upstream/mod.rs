//! Clients for user-service and product-service: typed wire formats over one tower stack each.
//!
//! - [`stack`] — composes the layers around the transport, top to bottom, per upstream.
//! - [`deadline`], [`retry`], [`hedge`], [`observe`], [`breaker`] — the layers of our own making
//!   ([`latency`] estimates when a hedge is due).
//! - [`transport`] — the innermost `Service`, one pooled HTTP GET whose answer is classified.
//! - [`not_found`] — 404s remembered for a short TTL, checked before an order's lookups start.
//! - [`stale`] — the last good answer per key, for stale-if-error ([`remembered`] holds both).
//! - [`user`], [`product`] — each upstream's wire format.

pub mod breaker;
pub mod deadline;
pub mod hedge;
pub mod latency;
pub mod not_found;
pub mod observe;
pub mod product;
pub mod remembered;
pub mod retry;
pub mod span;
pub mod stack;
pub mod stale;
pub mod transport;
pub mod user;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tracing::Instrument;

use async_trait::async_trait;
use breaker::BreakerHandle;

use crate::config::StackConfig;
use crate::domain::{Lookup, Stale, Upstream, UpstreamError};
use not_found::NotFoundCache;
use stale::StaleCache;
pub use transport::Decode;

/// The collection in an upstream's URL: `/users/{id}`, `/products/{code}`.
pub fn collection(upstream: Upstream) -> &'static str {
    match upstream {
        Upstream::User => "users",
        Upstream::Product => "products",
    }
}

/// One lookup, cheap to clone so the retry layer can send it again.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// A validated id (see `domain::ids`); still percent-encoded into the path.
    pub key: String,
    /// When the whole order gives up; no layer waits or retries past it.
    pub deadline: Instant,
    /// When this attempt gives up: set by the attempt timeout layer, sent to the upstream.
    pub attempt_deadline: Instant,
    /// 1 for the first attempt; the retry layer counts up.
    pub attempt: u32,
    /// A second attempt sent because the first was slow (the hedge layer's).
    pub hedge: bool,
}

/// One upstream's stack as a service.
pub type StackService<T> = BoxCloneSyncService<UpstreamRequest, Option<T>, UpstreamError>;

/// Builds the stack's service for a configuration, over state that outlives reloads.
pub type BuildStack<T> = Box<dyn Fn(&StackConfig) -> StackService<T> + Send + Sync>;

/// A typed client: `Ok(None)` is the upstream's 404 ("unknown"), a healthy answer. Cheap to
/// clone; clones share everything, reloads included.
pub struct UpstreamClient<T> {
    shared: Arc<Client<T>>,
}

struct Client<T> {
    /// The stack in force; a lookup clones it when it starts, so a reload never touches a
    /// lookup in flight.
    service: RwLock<StackService<T>>,
    build: BuildStack<T>,
    breakers: BreakerHandle,
    not_found: NotFoundCache,
    stale: StaleCache<T>,
}

impl<T> Clone for UpstreamClient<T> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T: Clone + Send + Sync + 'static> UpstreamClient<T> {
    /// `build` makes the stack for a configuration; `breakers` must be the ones inside it
    /// (`refusal` reads them).
    pub fn new(build: BuildStack<T>, breakers: BreakerHandle, config: &StackConfig) -> Self {
        let client = Client {
            service: RwLock::new(build(config)),
            build,
            breakers,
            not_found: NotFoundCache::new(config.not_found_ttl, config.not_found_max_keys),
            stale: StaleCache::new(config.stale_if_error, config.stale_max_keys),
        };
        Self { shared: Arc::new(client) }
    }

    /// Puts `config` in force for the lookups that start from now on: breakers keep their
    /// state (and mode) under the new thresholds, the caches their entries under the new
    /// limits, the retry budget and the bulkhead their counts unless their own settings changed.
    pub fn reconfigure(&self, config: &StackConfig) {
        let now = Instant::now();
        let shared = &self.shared;
        shared.breakers.reconfigure(config.breaker.clone());
        shared.not_found.set_limits(config.not_found_ttl, config.not_found_max_keys, now);
        shared.stale.set_limits(config.stale_if_error, config.stale_max_keys, now);
        let service = (shared.build)(config);
        *shared.service.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = service;
    }

    pub fn breakers(&self) -> &BreakerHandle {
        &self.shared.breakers
    }

    fn service(&self) -> StackService<T> {
        self.shared.service.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Lookup<T> for UpstreamClient<T> {
    /// Whether the upstream answered 404 for `key` moments ago (within its TTL): the order can
    /// fail at once, before either lookup starts. Counted as `upstream_not_found_remembered_total`.
    fn known_unknown(&self, key: &str) -> bool {
        let known = self.shared.not_found.knows_unknown(key, Instant::now());
        if known {
            crate::telemetry::metrics::upstream_not_found_remembered(self.shared.breakers.upstream().as_str());
        }
        known
    }

    /// The answer `fetch(key)` would get at once from an open breaker, counted as that refused
    /// attempt (`rejected_open`); `None` when a fetch would be tried. An order asks both
    /// upstreams first so that a refused one never starts the other lookup only to cancel it
    /// (a cancelled HTTP/1 request costs its upstream connection).
    fn refusal(&self, key: &str) -> Option<UpstreamError> {
        let refused = self.shared.breakers.refusal(key)?;
        let upstream = self.shared.breakers.upstream().as_str();
        crate::telemetry::metrics::upstream_attempt(upstream, refused.outcome(), Duration::ZERO);
        span::lookup(upstream, key).in_scope(|| span::refused(upstream, &refused));
        Some(refused)
    }

    async fn fetch(&self, key: &str, deadline: Instant) -> Result<Option<T>, UpstreamError> {
        let request =
            UpstreamRequest { key: key.to_owned(), deadline, attempt_deadline: deadline, attempt: 1, hedge: false };
        let lookup = span::lookup(self.shared.breakers.upstream().as_str(), key);
        let answer = self.service().oneshot(request).instrument(lookup).await;
        if let Ok(answer) = &answer {
            let now = Instant::now();
            self.shared.stale.answered(key, answer.as_ref(), now);
            if answer.is_none() {
                self.shared.not_found.remember(key, now);
            }
        }
        answer
    }

    /// The last good answer for `key` within `{PREFIX}_STALE_IF_ERROR_MS` (see [`stale`]).
    fn stale(&self, key: &str) -> Option<Stale<T>> {
        self.shared.stale.get(key, Instant::now())
    }
}
