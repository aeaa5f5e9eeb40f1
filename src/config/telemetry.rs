//! `OTEL_*`: OpenTelemetry traces, read from the specification's standard variables so any
//! vendor's instructions apply as written. Export is off unless an OTLP endpoint is set.

use std::time::Duration;

use super::env::{ConfigError, Env, invalid, redact};

/// Where and how spans are exported; `endpoint: None` means tracing is off.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (the specification's rule). `OTEL_SDK_DISABLED=true`
    /// turns it off whatever is set.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME` (default `order-service`).
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: Sampler,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export; when full, new ones are dropped
    /// (and counted), so a dead collector never grows memory.
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export request.
    pub max_export_batch_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a finished span waits before its batch is sent.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_EXPORT_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`: one export request's limit; a
    /// batch that fails or times out is dropped (and counted), never retried into a backlog.
    pub export_timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,…`
    /// sent with every export (a vendor's API key), values percent-decoded (the specification's
    /// format). A name or value HTTP cannot carry is a configuration error, not silently left out.
    /// Values are marked sensitive: they are credentials, and never shown by `Debug`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The samplers of the specification. `ParentBased` follows the caller's decision when a
/// `traceparent` came in, and the inner sampler otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedOn,
    ParentBasedOff,
    ParentBasedRatio(f64),
}

impl TracingConfig {
    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let disabled = env.get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        env.record("OTEL_SDK_DISABLED", Some(disabled.to_string()));
        let endpoint = match (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env.get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(traces), _) => Some(http_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.trim())?),
            (None, Some(base)) => {
                let base = http_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.trim())?;
                Some(format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, None) => None,
        };
        env.record("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_deref().map(redact));
        env.record("OTEL_EXPORTER_OTLP_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref().map(redact));
        let protocol_var = if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        let protocol = env.get(protocol_var).unwrap_or_else(|| "http/protobuf".to_owned());
        if protocol.trim() != "http/protobuf" {
            // grpc would bring tonic and a second HTTP/2 stack for one exporter; every collector
            // (and every vendor endpoint) takes OTLP/HTTP too.
            let reason = format!("only http/protobuf is supported, got {:?}", protocol.trim());
            return Err(invalid(protocol_var, reason));
        }
        env.record("OTEL_EXPORTER_OTLP_PROTOCOL", Some(protocol.trim().to_owned()));
        let service_name = env.get("OTEL_SERVICE_NAME").unwrap_or_else(|| "order-service".to_owned());
        env.record("OTEL_SERVICE_NAME", Some(service_name.clone()));
        let timeout_default = env.number("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000u64, 1..=600_000)?;
        Ok(Self {
            endpoint: endpoint.filter(|_| !disabled),
            service_name,
            sampler: sampler(env)?,
            max_queue_size: env.number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1..=1_000_000)?,
            max_export_batch_size: env.number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1..=100_000)?,
            schedule_delay: env.millis("OTEL_BSP_SCHEDULE_DELAY", 1000)?,
            export_timeout: env.millis("OTEL_BSP_EXPORT_TIMEOUT", timeout_default)?,
            headers: headers(env)?,
        })
    }
}

fn headers(env: &Env<'_>) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigError> {
    let var = if env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
    } else {
        "OTEL_EXPORTER_OTLP_HEADERS"
    };
    let Some(raw) = env.get(var) else { return Ok(Vec::new()) };
    let mut headers = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(invalid(var, format!("expected key=value pairs separated by commas, got {:?}", redact(pair))));
        };
        let name = name.trim();
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| invalid(var, format!("the value of {name:?} is not UTF-8 once percent-decoded")))?;
        let unusable = || invalid(var, format!("{name:?} and its value cannot be an HTTP header"));
        let header_name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| unusable())?;
        let mut header_value = http::HeaderValue::from_str(&value).map_err(|_| unusable())?;
        header_value.set_sensitive(true);
        headers.push((header_name, header_value));
    }
    // The names only: the values are credentials.
    let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    env.record(var, Some(format!("{} (values not shown)", names.join(","))));
    Ok(headers)
}

fn http_url(var: &str, raw: &str) -> Result<String, ConfigError> {
    if raw.starts_with("http://") || raw.starts_with("https://") {
        Ok(raw.to_owned())
    } else {
        Err(invalid(var, format!("expected an http(s) URL, got {:?}", redact(raw))))
    }
}

/// The specification's default is `parentbased_always_on`.
fn sampler(env: &Env<'_>) -> Result<Sampler, ConfigError> {
    let name = env.get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".to_owned());
    let name = name.trim().to_ascii_lowercase();
    let ratio = || -> Result<f64, ConfigError> {
        let raw = env.get("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "1.0".to_owned());
        let ratio: f64 = raw
            .trim()
            .parse()
            .map_err(|_| invalid("OTEL_TRACES_SAMPLER_ARG", format!("expected a ratio from 0 to 1, got {raw:?}")))?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid("OTEL_TRACES_SAMPLER_ARG", format!("expected a ratio from 0 to 1, got {raw:?}")));
        }
        env.record("OTEL_TRACES_SAMPLER_ARG", Some(ratio.to_string()));
        Ok(ratio)
    };
    let sampler = match name.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::Ratio(ratio()?),
        "parentbased_always_on" => Sampler::ParentBasedOn,
        "parentbased_always_off" => Sampler::ParentBasedOff,
        "parentbased_traceidratio" => Sampler::ParentBasedRatio(ratio()?),
        other => {
            let reason = format!(
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio, got {other:?}"
            );
            return Err(invalid("OTEL_TRACES_SAMPLER", reason));
        }
    };
    env.record("OTEL_TRACES_SAMPLER", Some(name));
    Ok(sampler)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<TracingConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let lookup = |name: &str| vars.get(name).cloned();
        TracingConfig::read(&Env::new(&lookup))
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let c = read(&[]).expect("defaults");
        assert_eq!(c.endpoint, None);
        assert_eq!(c.service_name, "order-service");
        assert_eq!(c.sampler, Sampler::ParentBasedOn);
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_used_as_is() {
        let c = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).expect("valid");
        assert_eq!(c.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://vendor.example/otlp/traces"),
        ])
        .expect("valid");
        assert_eq!(c.endpoint.as_deref(), Some("https://vendor.example/otlp/traces"));
        let off = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "true")]);
        assert_eq!(off.expect("valid").endpoint, None);
    }

    #[test]
    fn export_headers_are_percent_decoded_the_signal_s_own_preferred_and_bad_ones_refused() {
        let c = read(&[("OTEL_EXPORTER_OTLP_HEADERS", " api-key = s3cr%3Dt%2C1 ,x-team=orders,")]).expect("valid");
        let text = |c: &TracingConfig| -> Vec<(String, String)> {
            c.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().expect("text").to_owned())).collect()
        };
        assert_eq!(
            text(&c),
            [("api-key".to_owned(), "s3cr=t,1".to_owned()), ("x-team".to_owned(), "orders".to_owned())]
        );
        assert!(!format!("{c:?}").contains("s3cr"), "a value is never shown by Debug");
        let c = read(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=1"), ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2")])
            .expect("valid");
        assert_eq!(text(&c), [("b".to_owned(), "2".to_owned())]);
        assert!(read(&[]).expect("valid").headers.is_empty());
        for bad in ["no-equals-sign", "bad name=1", "x=line%0Abreak", "x=%FF"] {
            let error = read(&[("OTEL_EXPORTER_OTLP_HEADERS", bad)]).expect_err(bad).to_string();
            assert!(error.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{bad}: {error}");
            assert!(!error.contains("break"), "a value is never echoed: {error}");
        }
    }

    #[test]
    fn samplers_follow_the_specification() {
        let c = read(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")]);
        assert_eq!(c.expect("valid").sampler, Sampler::ParentBasedRatio(0.1));
        assert_eq!(read(&[("OTEL_TRACES_SAMPLER", "always_off")]).expect("valid").sampler, Sampler::AlwaysOff);
        for (var, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ] {
            assert_eq!(read(&[(var, value)]).expect_err(value).var, var);
        }
        let bad_ratio = read(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]);
        assert_eq!(bad_ratio.expect_err("ratio").var, "OTEL_TRACES_SAMPLER_ARG");
    }
}
