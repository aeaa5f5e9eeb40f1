//! The span exporter: OTLP/HTTP with protobuf bodies, one POST per batch, no retries (the queue
//! counts what fails as dropped). Ours for the encoding ([`super::encode`]), which is where
//! opentelemetry-otlp spent most of a traced order's export; the HTTP part is reqwest, as it was
//! in opentelemetry-otlp.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::encode;

#[derive(Debug)]
pub struct OtlpHttp {
    /// Sends the configured headers and the content type with every request.
    client: reqwest::Client,
    endpoint: String,
    resource: Resource,
}

impl OtlpHttp {
    /// Posts to `endpoint` (the full traces URL) with `headers` (`OTEL_EXPORTER_OTLP_HEADERS`,
    /// validated by the configuration), each export bounded by `timeout`.
    pub fn new(
        endpoint: String,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let mut sent = HeaderMap::new();
        sent.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        for (name, value) in headers {
            sent.append(name, value.clone());
        }
        let client = reqwest::Client::builder().timeout(timeout).default_headers(sent).build()?;
        Ok(Self { client, endpoint, resource: Resource::builder_empty().build() })
    }
}

impl SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut body = Vec::with_capacity(512 * batch.len());
        encode::export_request(&batch, &self.resource, &mut body);
        drop(batch);
        let failed = |error: reqwest::Error| OTelSdkError::InternalFailure(format!("OTLP export failed: {error}"));
        let response = self.client.post(&self.endpoint).body(body).send().await.map_err(failed)?;
        let status = response.status();
        // Read to the end, so the connection is kept for the next batch.
        response.bytes().await.map_err(failed)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!("the collector answered {status}")))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}
