//! The outermost layer: nothing below it — attempts, backoff sleeps — outlives the order's
//! deadline, which travels in each request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{UpstreamError, UpstreamRequest};

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Service<UpstreamRequest> for Deadline<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let deadline = request.deadline;
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::time::timeout_at(deadline, call).await.unwrap_or(Err(UpstreamError::DeadlineExceeded))
        })
    }
}
