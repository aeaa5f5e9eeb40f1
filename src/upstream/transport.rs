//! The innermost service: one GET over the shared, pooled reqwest client, its answer classified.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use tower::Service;
use tracing::Instrument;

use super::{Upstream, UpstreamError, UpstreamRequest, span};
use crate::telemetry::context;
use crate::telemetry::traces::propagation;

/// The deadline header every attempt carries (docs/contracts.md).
pub const EXPECTED_TIMEOUT: &str = "x-envoy-expected-rq-timeout-ms";

/// Largest upstream body read; the real answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A wire format: how an upstream's 200 body becomes a domain value.
pub trait Decode: Sized + Send + 'static {
    /// Why the body is unusable, on failure (it becomes `InvalidResponse`).
    fn decode(body: &[u8]) -> Result<Self, String>;
}

/// The one HTTP client of the process: pooled keep-alive connections shared by every call.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Upstreams are internal; a proxy from the environment would only add a hop.
        .no_proxy()
        // An upstream must not be able to send our lookups (and their headers) to another
        // host: a 3xx is an answer like any other status (`UnexpectedStatus`, 502).
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `GET {base}/{collection}/{key}`, decoded as `T`; 404 is `Ok(None)`.
pub struct Transport<T> {
    client: reqwest::Client,
    base: Url,
    collection: &'static str,
    /// The `upstream` of its trace spans.
    upstream: &'static str,
    _decodes: PhantomData<fn() -> T>,
}

impl<T> Clone for Transport<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            base: self.base.clone(),
            collection: self.collection,
            upstream: self.upstream,
            _decodes: PhantomData,
        }
    }
}

impl<T> Transport<T> {
    pub fn new(client: reqwest::Client, base: Url, upstream: Upstream) -> Self {
        Self {
            client,
            base,
            collection: super::collection(upstream),
            upstream: upstream.as_str(),
            _decodes: PhantomData,
        }
    }

    /// The key is pushed as one path segment, so it is percent-encoded whatever it holds.
    fn url_for(&self, key: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(self.collection).push(key);
        }
        url
    }
}

impl<T: Decode> Service<UpstreamRequest> for Transport<T> {
    type Response = Option<T>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Option<T>, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        // Envoy's convention: how long this attempt will still be waited for, so the upstream
        // can stop working on an answer nobody will read.
        let expected = super::deadline::expected_timeout_ms(&request, tokio::time::Instant::now());
        let url = self.url_for(&request.key);
        let attempt = span::Attempt::start(self.upstream, &url, request.attempt, request.hedge);
        let mut get = self.client.get(url).header(EXPECTED_TIMEOUT, expected.to_string());
        let correlation = context::current();
        if let Some(id) = correlation.request_id {
            get = get.header("x-request-id", id);
        }
        // With tracing on, the upstream continues this attempt's span; else the caller's
        // traceparent is passed on as it came.
        match propagation::of(attempt.span()) {
            Some(context) => {
                get = get.header("traceparent", context.traceparent);
                if let Some(tracestate) = context.tracestate {
                    get = get.header("tracestate", tracestate);
                }
            }
            None => {
                if let Some(traceparent) = correlation.traceparent {
                    get = get.header("traceparent", traceparent);
                }
            }
        }
        let span = attempt.span().clone();
        Box::pin(
            async move {
                let (result, status) = exchange::<T>(get).await;
                attempt.finish(&result, status);
                result
            }
            .instrument(span),
        )
    }
}

/// One GET, its answer classified; the status when one arrived.
async fn exchange<T: Decode>(get: reqwest::RequestBuilder) -> (Result<Option<T>, UpstreamError>, Option<u16>) {
    let response = match get.send().await {
        Ok(response) => response,
        Err(error) => return (Err(classify_send_error(error)), None),
    };
    let status = response.status().as_u16();
    (classify::<T>(response).await, Some(status))
}

async fn classify<T: Decode>(response: reqwest::Response) -> Result<Option<T>, UpstreamError> {
    match response.status() {
        StatusCode::OK => {
            let body = read_body(response).await?;
            T::decode(&body).map(Some).map_err(UpstreamError::InvalidResponse)
        }
        StatusCode::NOT_FOUND => Ok(None),
        status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            Err(UpstreamError::ServerError(status.as_u16()))
        }
        // Asking again would get the same answer, and it says nothing about health.
        status if status.is_client_error() || status.is_redirection() => {
            Err(UpstreamError::UnexpectedStatus(status.as_u16()))
        }
        status => Err(UpstreamError::InvalidResponse(format!("unexpected HTTP {status}"))),
    }
}

fn classify_send_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout
    } else {
        // Refused, reset, closed before the head: all mean "no answer from a live peer".
        UpstreamError::Connect(with_sources(&error.without_url()))
    }
}

/// The error and its `source()` chain, `: `-separated: reqwest's own text ("error sending
/// request") says nothing of why; the operator needs "connection refused", "reset", the DNS
/// failure. Only ever logged: problem bodies name the kind of failure, not this text.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Some layers repeat their source's text in their own; keep each once.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::with_capacity(512);
    while let Some(chunk) =
        response.chunk().await.map_err(|e| UpstreamError::InvalidResponse(format!("body: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(UpstreamError::InvalidResponse(format!("body over {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Anything;
    impl Decode for Anything {
        fn decode(_: &[u8]) -> Result<Self, String> {
            Ok(Anything)
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_refused_in_its_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let error = http_client().get(format!("http://127.0.0.1:{port}/users/x")).send().await.expect_err("closed");
        let cause = classify_send_error(error).to_string();
        assert!(cause.to_lowercase().contains("refused"), "the source chain is kept: {cause}");
    }

    #[test]
    fn keys_are_one_encoded_path_segment() {
        let base = Url::parse("http://127.0.0.1:8082/api/").expect("url");
        let t = Transport::<Anything>::new(reqwest::Client::new(), base, Upstream::User);
        assert_eq!(t.url_for("7c11e1ce2741").as_str(), "http://127.0.0.1:8082/api/users/7c11e1ce2741");
        assert_eq!(t.url_for("../x?y").as_str(), "http://127.0.0.1:8082/api/users/..%2Fx%3Fy");
    }
}
