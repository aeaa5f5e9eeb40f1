//! The one place where an upstream's service stack is composed, outermost layer first.

use reqwest::Url;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::transport::Transport;
use super::{Decode, Upstream, UpstreamClient};

/// Builds the client for one upstream over the shared HTTP client.
pub fn build<T: Decode>(http: reqwest::Client, upstream: Upstream, base: Url) -> UpstreamClient<T> {
    let service = ServiceBuilder::new().service(Transport::<T>::new(http, base, upstream));
    UpstreamClient::new(BoxCloneSyncService::new(service))
}
