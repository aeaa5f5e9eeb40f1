//! Clients for user-service and product-service: typed wire formats over one tower stack each.
//!
//! - [`stack`] — composes the layers around the transport, top to bottom, per upstream.
//! - [`deadline`], [`retry`], [`observe`], [`breaker`] — the layers of our own making.
//! - [`transport`] — the innermost `Service`, one pooled HTTP GET whose answer is classified.
//! - [`not_found`] — 404s remembered for a short TTL, checked before an order's lookups start.
//! - [`user`], [`product`] — each upstream's wire format.

pub mod breaker;
pub mod deadline;
pub mod not_found;
pub mod observe;
pub mod product;
pub mod retry;
pub mod span;
pub mod stack;
pub mod transport;
pub mod user;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tracing::Instrument;

use async_trait::async_trait;
use breaker::BreakerHandle;

use crate::domain::{Lookup, Upstream, UpstreamError};
use not_found::NotFoundCache;
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
    /// 1 for the first attempt; the retry layer counts up.
    pub attempt: u32,
}

/// A typed client: `Ok(None)` is the upstream's 404 ("unknown"), a healthy answer.
pub struct UpstreamClient<T> {
    service: BoxCloneSyncService<UpstreamRequest, Option<T>, UpstreamError>,
    breakers: BreakerHandle,
    not_found: Arc<NotFoundCache>,
}

impl<T> Clone for UpstreamClient<T> {
    fn clone(&self) -> Self {
        Self { service: self.service.clone(), breakers: self.breakers.clone(), not_found: Arc::clone(&self.not_found) }
    }
}

impl<T: Send + 'static> UpstreamClient<T> {
    /// `breakers` must be the ones inside `service`'s stack: `refusal` reads them. 404s are not
    /// remembered unless [`UpstreamClient::remembering_not_found`] says so.
    pub fn new(
        service: BoxCloneSyncService<UpstreamRequest, Option<T>, UpstreamError>,
        breakers: BreakerHandle,
    ) -> Self {
        Self { service, breakers, not_found: Arc::new(NotFoundCache::off()) }
    }

    /// Remembers this upstream's 404s in `cache` (see [`not_found`]).
    pub fn remembering_not_found(self, cache: NotFoundCache) -> Self {
        Self { not_found: Arc::new(cache), ..self }
    }
}

#[async_trait]
impl<T: Send + 'static> Lookup<T> for UpstreamClient<T> {
    /// Whether the upstream answered 404 for `key` moments ago (within its TTL): the order can
    /// fail at once, before either lookup starts. Counted as `upstream_not_found_remembered_total`.
    fn known_unknown(&self, key: &str) -> bool {
        let known = self.not_found.knows_unknown(key, Instant::now());
        if known {
            crate::telemetry::metrics::upstream_not_found_remembered(self.breakers.upstream().as_str());
        }
        known
    }

    /// The answer `fetch(key)` would get at once from an open breaker, counted as that refused
    /// attempt (`rejected_open`); `None` when a fetch would be tried. An order asks both
    /// upstreams first so that a refused one never starts the other lookup only to cancel it
    /// (a cancelled HTTP/1 request costs its upstream connection).
    fn refusal(&self, key: &str) -> Option<UpstreamError> {
        let refused = self.breakers.refusal(key)?;
        let upstream = self.breakers.upstream().as_str();
        crate::telemetry::metrics::upstream_attempt(upstream, refused.outcome(), Duration::ZERO);
        span::lookup(upstream, key).in_scope(|| span::refused(upstream, &refused));
        Some(refused)
    }

    async fn fetch(&self, key: &str, deadline: Instant) -> Result<Option<T>, UpstreamError> {
        let request = UpstreamRequest { key: key.to_owned(), deadline, attempt: 1 };
        let lookup = span::lookup(self.breakers.upstream().as_str(), key);
        let answer = self.service.clone().oneshot(request).instrument(lookup).await;
        if let Ok(None) = answer {
            self.not_found.remember(key, Instant::now());
        }
        answer
    }
}
