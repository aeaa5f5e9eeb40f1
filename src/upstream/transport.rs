//! The innermost service: one GET over the shared, pooled HTTP client, its answer classified.
//!
//! The client is hyper-util's directly, not reqwest's: reqwest parsed each request's URL twice
//! more (its redirect policy and the response's `url`, with IDNA), about 6 % of the service's CPU
//! per order, for features an upstream lookup does not use (docs/overload.md, sixth session).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::Url;
use tower::Service;
use tracing::Instrument;

use super::{Upstream, UpstreamError, UpstreamRequest, span};
use crate::telemetry::context;
use crate::telemetry::traces::propagation;

/// The deadline header every attempt carries (docs/contracts.md).
pub const EXPECTED_TIMEOUT: &str = "x-envoy-expected-rq-timeout-ms";

/// Largest upstream body read; the real answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most of an answer held in the client's read buffer: its status line and headers must fit
/// (hyper's own default is about 400 KiB). An upstream that sends more gets no answer read
/// (`Connect`, 502), and costs at most this per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A wire format: how an upstream's 200 body becomes a domain value.
pub trait Decode: Sized + Send + 'static {
    /// Why the body is unusable, on failure (it becomes `InvalidResponse`).
    fn decode(body: &[u8]) -> Result<Self, String>;
}

/// The one HTTP client of the process: pooled keep-alive connections shared by every call,
/// `http://` and `https://` alike (rustls, the operating system's trust store).
///
/// It never follows a redirect: an upstream must not be able to send our lookups (and their
/// headers) to another host, so a 3xx is an answer like any other status (`UnexpectedStatus`,
/// 502). It reads no proxy from the environment: upstreams are internal, a proxy would only add
/// a hop.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the [`HttpClient`].
pub fn http_client() -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(2)));
    let tls = HttpsConnector::<HttpConnector>::builder().with_tls_config(tls_config()).https_or_http().enable_http1();
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .http1_max_buf_size(MAX_HEAD_BYTES)
        .build(tls.wrap_connector(tcp))
}

/// TLS as reqwest gave it: aws-lc-rs, the platform's verifier. The provider is named rather than
/// left to a process default, which nothing here installs.
fn tls_config() -> rustls::ClientConfig {
    use rustls_platform_verifier::BuilderVerifierExt;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions");
    builder
        .clone()
        .with_platform_verifier()
        // Without a trust store, https:// upstreams fail their handshake (a connect error, 502)
        // rather than the process failing to start: plain-http upstreams still work.
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "no TLS trust store: https:// upstreams will be refused");
            builder.with_root_certificates(rustls::RootCertStore::empty())
        })
        .with_no_client_auth()
}

/// `GET {base}/{collection}/{key}`, decoded as `T`; 404 is `Ok(None)`.
pub struct Transport<T> {
    /// Behind an `Arc`: each attempt's future owns a handle, and hyper-util's client is several
    /// `Arc`s and a builder to clone, where this is one count.
    client: Arc<HttpClient>,
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
    pub fn new(client: HttpClient, base: Url, upstream: Upstream) -> Self {
        Self {
            client: Arc::new(client),
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
        let mut get = Request::get(url.as_str())
            .header(EXPECTED_TIMEOUT, HeaderValue::from(u64::try_from(expected).unwrap_or(u64::MAX)));
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
        let client = Arc::clone(&self.client);
        let span = attempt.span().clone();
        Box::pin(
            async move {
                let (result, status) = match get.body(Empty::new()) {
                    Ok(get) => exchange::<T>(&client, get).await,
                    // Only a header value we could not send gets here (a tracestate with a
                    // control character): nothing left for the upstream, so no answer from it.
                    Err(error) => (Err(UpstreamError::Connect(format!("request not sendable: {error}"))), None),
                };
                attempt.finish(&result, status);
                result
            }
            .instrument(span),
        )
    }
}

/// One GET, its answer classified; the status when one arrived.
async fn exchange<T: Decode>(
    client: &HttpClient,
    get: Request<Empty<Bytes>>,
) -> (Result<Option<T>, UpstreamError>, Option<u16>) {
    let response = match client.request(get).await {
        Ok(response) => response,
        Err(error) => return (Err(classify_send_error(&error)), None),
    };
    let status = response.status().as_u16();
    (classify::<T>(response).await, Some(status))
}

async fn classify<T: Decode>(response: http::Response<hyper::body::Incoming>) -> Result<Option<T>, UpstreamError> {
    match response.status() {
        StatusCode::OK => {
            let body = read_body(response.into_body()).await?;
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

/// A connect that ran out of its 2 s is a timeout; everything else before an answer (refused,
/// reset, closed before the head, a failed handshake) is "no answer from a live peer".
fn classify_send_error(error: &(dyn std::error::Error + 'static)) -> UpstreamError {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return UpstreamError::Timeout;
        }
        source = cause.source();
    }
    UpstreamError::Connect(with_sources(error))
}

/// The error and its `source()` chain, `: `-separated: the client's own text ("client error
/// (Connect)") says nothing of why; the operator needs "connection refused", "reset", the DNS
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

async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, UpstreamError> {
    let mut read = Vec::with_capacity(512);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::InvalidResponse(format!("body: {}", with_sources(&e))))?;
        let Ok(chunk) = frame.into_data() else { continue };
        if read.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(UpstreamError::InvalidResponse(format!("body over {MAX_BODY_BYTES} bytes")));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
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
        let get = Request::get(format!("http://127.0.0.1:{port}/users/x")).body(Empty::new()).expect("request");
        let error = http_client().request(get).await.expect_err("closed");
        let cause = classify_send_error(&error).to_string();
        assert!(cause.to_lowercase().contains("refused"), "the source chain is kept: {cause}");
    }

    /// An `https://` base is spoken to over TLS, never in plain text; a peer that does not
    /// answer the handshake is no answer from a live peer (`Connect`, 502).
    #[tokio::test]
    async fn an_https_upstream_gets_a_tls_handshake() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut first = [0u8; 3];
            socket.read_exact(&mut first).await.expect("read");
            first
        });
        let get = Request::get(format!("https://127.0.0.1:{port}/users/x")).body(Empty::new()).expect("request");
        let error = http_client().request(get).await.expect_err("no TLS peer");
        // A TLS record of type handshake (22), version 3.x: a ClientHello, not "GET /users/x".
        let first = peer.await.expect("peer");
        assert_eq!((first[0], first[1]), (0x16, 0x03), "first bytes {first:?}");
        assert!(matches!(classify_send_error(&error), UpstreamError::Connect(_)), "{error:?}");
    }

    /// hyper-util's connector reports its connect timeout as an `io::Error` of kind `TimedOut`
    /// inside its own error; found anywhere in the chain, it is a `Timeout`, not a `Connect`.
    #[test]
    fn a_connect_timeout_in_the_cause_chain_is_a_timeout() {
        #[derive(Debug)]
        struct Connect(std::io::Error);
        impl std::fmt::Display for Connect {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Connect {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"));
        assert!(matches!(classify_send_error(&timed_out), UpstreamError::Timeout));
        let refused = Connect(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert!(
            matches!(classify_send_error(&refused), UpstreamError::Connect(ref why) if why.contains("connection refused")),
            "{:?}",
            classify_send_error(&refused)
        );
    }

    #[test]
    fn keys_are_one_encoded_path_segment() {
        let base = Url::parse("http://127.0.0.1:8082/api/").expect("url");
        let t = Transport::<Anything>::new(http_client(), base, Upstream::User);
        assert_eq!(t.url_for("7c11e1ce2741").as_str(), "http://127.0.0.1:8082/api/users/7c11e1ce2741");
        assert_eq!(t.url_for("../x?y").as_str(), "http://127.0.0.1:8082/api/users/..%2Fx%3Fy");
    }
}
