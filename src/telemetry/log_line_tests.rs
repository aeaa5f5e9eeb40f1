use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use super::*;

/// What the log layer wrote (the logging tests use it too).
#[derive(Clone, Default)]
pub(in crate::telemetry) struct Lines(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line `log` wrote, parsed (a line that is not JSON fails the test).
fn written(log: impl FnOnce()) -> Vec<Value> {
    let lines = Lines::default();
    let writer = lines.clone();
    let layer = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonMembers)
        .event_format(JsonLine)
        .with_writer(move || writer.clone());
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
    let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn a_line_has_the_event_fields_flattened_and_its_span_s_fields_and_name() {
    let lines = written(|| {
        let span = tracing::info_span!("request", method = "POST", route = "/v1/orders", request_id = "r-1");
        let _entered = span.enter();
        tracing::info!(status = 201u16, latency_ms = 1.5, ok = true, delta = -3i64, "request");
    });
    let [line] = lines.as_slice() else { panic!("one line: {lines:?}") };
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{line}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert_eq!(
        (&line["status"], &line["latency_ms"], &line["ok"], &line["delta"]),
        (&json!(201), &json!(1.5), &json!(true), &json!(-3))
    );
    assert_eq!(line["target"], module_path!());
    assert_eq!(line["span"], json!({"method": "POST", "route": "/v1/orders", "request_id": "r-1", "name": "request"}));
}

#[test]
fn strings_and_debug_values_are_escaped_and_non_finite_numbers_are_null() {
    let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
    let lines = written(|| {
        tracing::warn!(cause = %nasty, raw = nasty, ratio = f64::NAN, far = f64::INFINITY, "{nasty}");
    });
    let [line] = lines.as_slice() else { panic!("one line: {lines:?}") };
    assert_eq!(line["message"], nasty);
    assert_eq!(line["cause"], nasty);
    assert_eq!(line["raw"], nasty);
    assert_eq!((&line["ratio"], &line["far"]), (&Value::Null, &Value::Null));
    assert!(line.get("span").is_none(), "no span, no `span`: {line}");
}

#[test]
fn the_tracer_s_span_fields_stay_out_and_fields_recorded_later_are_kept() {
    let lines = written(|| {
        let span = tracing::info_span!(
            "request",
            otel.kind = "server",
            http.route = "/v1/orders",
            route = "/v1/orders",
            url.path = tracing::field::Empty,
            later = tracing::field::Empty,
        );
        span.record("url.path", "/v1/orders");
        span.record("later", 7);
        let _entered = span.enter();
        tracing::info!("inside");
    });
    assert_eq!(lines[0]["span"], json!({"route": "/v1/orders", "later": 7, "name": "request"}));
}

#[test]
fn a_span_whose_only_fields_come_later_still_writes_valid_members() {
    let lines = written(|| {
        let span = tracing::info_span!("request", first = tracing::field::Empty, second = tracing::field::Empty);
        span.record("first", "a");
        span.record("second", "b");
        let _entered = span.enter();
        tracing::info!("inside");
    });
    assert_eq!(lines[0]["span"], json!({"first": "a", "second": "b", "name": "request"}));
}

#[test]
fn appended_members_keep_the_fields_valid() {
    let mut members = String::new();
    append_member(&mut members, "trace_id", "abc");
    append_member(&mut members, "span_id", "d\"e");
    let object: Value = serde_json::from_str(&format!("{{{members}}}")).expect("valid members");
    assert_eq!(object, json!({"trace_id": "abc", "span_id": "d\"e"}));
}

#[test]
fn a_log_record_shows_its_own_target_and_no_log_fields() {
    let lines = written(|| {
        let record = tracing_log::log::Record::builder()
            .args(format_args!("from the log crate"))
            .level(tracing_log::log::Level::Warn)
            .target("lapin::channels")
            .module_path(Some("lapin::channels"))
            .build();
        tracing_log::format_trace(&record).expect("dispatched");
    });
    let [line] = lines.as_slice() else { panic!("one line: {lines:?}") };
    assert_eq!(
        (&line["target"], &line["level"], &line["message"]),
        (&json!("lapin::channels"), &json!("WARN"), &json!("from the log crate"))
    );
    assert!(line.as_object().expect("object").keys().all(|k| !k.starts_with("log.")), "{line}");
}
