//! OpenTelemetry traces as an OTLP backend receives them from the real binary: one order is one
//! trace, from the caller's `traceparent` through every upstream attempt to the database.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::kit::{ADA, Backend, Collector, ReceivedSpan, TestBinary, Upstreams, eventually, sample};
use crate::tail::{ClassicBox, WARM_UP, upstreams_with};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

async fn traced(collector: &Collector) -> TestBinary {
    collector
        .receiving_from(TestBinary::new(Backend::Postgres).await)
        .env("OTEL_SERVICE_NAME", "order-service-under-test")
}

/// Places an order as a caller that is itself traced (and sampled); returns the status and
/// `traceresponse`.
async fn order(service: &TestBinary, user: &str, product: &str, parent_span: &str) -> (u16, String) {
    order_as(service, user, product, &format!("00-{CALLER_TRACE}-{parent_span}-01")).await
}

/// Places an order with the caller's `traceparent`; returns the status and `traceresponse`.
async fn order_as(service: &TestBinary, user: &str, product: &str, traceparent: &str) -> (u16, String) {
    let response = service
        .http
        .post(service.url("/v1/orders"))
        .header("traceparent", traceparent)
        .json(&serde_json::json!({ "user_id": user, "product_code": product }))
        .send()
        .await
        .expect("order");
    let traceresponse =
        response.headers().get("traceresponse").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (response.status().as_u16(), traceresponse)
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span in {:#?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    found[0]
}

#[tokio::test]
async fn one_order_is_one_trace_from_the_callers_traceparent_to_the_database() {
    let collector = Collector::start().await;
    let service = traced(&collector).await;
    let _running = service.start().await;

    let (status, traceresponse) = order(&service, ADA, "classic-box", "00f067aa0ba902b7").await;
    assert_eq!(status, 201);
    assert!(traceresponse.starts_with(&format!("00-{CALLER_TRACE}-")), "{traceresponse}");

    let spans = eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), |s| s.len() >= 6).await;
    let server = only(&spans, "POST /v1/orders");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7", "the caller's span is the parent");
    assert!(server.links.is_empty(), "continued, not linked");
    assert_eq!(server.attribute("http.route"), Some("/v1/orders"));
    assert_eq!(server.attribute("http.request.method"), Some("POST"));
    assert_eq!(server.attribute("http.response.status_code"), Some("201"));
    assert_eq!(server.service_name, "order-service-under-test");
    assert!(traceresponse.contains(&server.span_id), "traceresponse names the server span");

    let place = only(&spans, "place order");
    assert_eq!(place.parent_span_id, server.span_id);
    for upstream in ["user", "product"] {
        let lookup = only(&spans, &format!("lookup {upstream}"));
        assert_eq!(lookup.parent_span_id, place.span_id);
        let attempts: Vec<_> =
            named(&spans, "GET").into_iter().filter(|s| s.parent_span_id == lookup.span_id).collect();
        assert_eq!(attempts.len(), 1, "one attempt for {upstream}");
        assert_eq!(attempts[0].kind, CLIENT);
        assert_eq!(attempts[0].attribute("http.response.status_code"), Some("200"));
        assert_eq!(attempts[0].attribute("outcome"), Some("success"));
    }
    let insert = only(&spans, "INSERT orders");
    assert_eq!((insert.kind, insert.parent_span_id.as_str()), (CLIENT, place.span_id.as_str()));
    assert_eq!(insert.attribute("db.system.name"), Some("postgresql"));
}

#[tokio::test]
async fn a_retried_lookup_shows_both_attempts() {
    let collector = Collector::start().await;
    let service = traced(&collector).await;
    let _running = service.start().await;

    // Alan Turing answers 500, then 200 (the fault table): the second attempt places the order.
    let (status, _) = order(&service, "e6f24d7d1c7e", "classic-box", "00f067aa0ba902b8").await;
    assert_eq!(status, 201);
    let spans = eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), |s| s.len() >= 7).await;
    let lookup = only(&spans, "lookup user");
    let mut attempts: Vec<_> =
        named(&spans, "GET").into_iter().filter(|s| s.parent_span_id == lookup.span_id).collect();
    attempts.sort_by_key(|s| s.attribute("attempt").unwrap_or_default().to_owned());
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].attribute("http.response.status_code"), Some("500"));
    assert_eq!(attempts[0].status, 2, "the failed attempt is an error span");
    assert_eq!(attempts[1].attribute("http.request.resend_count"), Some("1"));
    assert_eq!(attempts[1].attribute("outcome"), Some("success"));
}

#[tokio::test]
async fn a_hedged_lookup_shows_the_slow_attempt_cancelled_and_the_hedge_answering() {
    // The product's first call after the warm-up takes 5 s; the hedge (after 100 ms) answers.
    let slow = ClassicBox { calls: AtomicUsize::new(0), slow: vec![WARM_UP + 1], slow_delay: Duration::from_secs(5) };
    let collector = Collector::start().await;
    let service = collector
        .receiving_from(TestBinary::with_upstreams(Backend::Sqlite, upstreams_with(slow).await).await)
        .env("PRODUCT_HEDGE_MIN_DELAY_MS", "100");
    let _running = service.start().await;
    for _ in 0..WARM_UP {
        let body = serde_json::json!({ "user_id": ADA, "product_code": "classic-box" });
        let response = service.http.post(service.url("/v1/orders")).json(&body).send().await.expect("order");
        assert_eq!(response.status(), 201, "warm-up: the hedge layer learns what normal is");
    }

    let (status, _) = order(&service, ADA, "classic-box", "00f067aa0ba902c1").await;
    assert_eq!(status, 201);
    let attempts_of = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        let Some(lookup) = spans.iter().find(|s| s.name == "lookup product") else { return Vec::new() };
        spans.iter().filter(|s| s.name == "GET" && s.parent_span_id == lookup.span_id).cloned().collect()
    };
    let spans =
        eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), |s| attempts_of(s).len() >= 2)
            .await;
    let mut attempts = attempts_of(&spans);
    attempts.sort_by_key(|s| s.attribute("hedge").unwrap_or_default().to_owned());
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (slow, hedge) = (&attempts[0], &attempts[1]);
    assert_eq!((slow.attribute("hedge"), slow.attribute("outcome")), (Some("false"), Some("cancelled")), "{slow:#?}");
    assert_eq!((hedge.attribute("hedge"), hedge.attribute("outcome")), (Some("true"), Some("success")), "{hedge:#?}");
    assert_eq!(hedge.attribute("http.response.status_code"), Some("200"));
    let user_lookup = only(&spans, "lookup user");
    let user_attempts = named(&spans, "GET").into_iter().filter(|s| s.parent_span_id == user_lookup.span_id);
    assert!(user_attempts.map(|s| s.attribute("hedge")).eq([Some("false")]), "the user lookup was not hedged");
}

#[tokio::test]
async fn an_open_breaker_shows_as_a_refusal_on_the_lookup() {
    let collector = Collector::start().await;
    let service = traced(&collector).await.env("PRODUCT_BREAKER_KEY_MIN_CALLS", "2").env("PRODUCT_MAX_ATTEMPTS", "1");
    let _running = service.start().await;

    // veggie-box answers 500: two failures open its breaker, the third order is refused.
    for span in ["00f067aa0ba90201", "00f067aa0ba90202"] {
        assert_eq!(order(&service, ADA, "veggie-box", span).await.0, 502);
    }
    let (status, _) = order(&service, ADA, "veggie-box", "00f067aa0ba90203").await;
    assert_eq!(status, 503, "circuit open");
    let refused = eventually(
        Duration::from_secs(20),
        async || {
            collector
                .trace(CALLER_TRACE)
                .into_iter()
                .find(|s| s.name == "lookup product" && s.events.iter().any(|e| e.contains("refused locally")))
        },
        Option::is_some,
    )
    .await;
    let refused = refused.expect("a lookup span with the refusal event");
    assert!(refused.events.iter().any(|e| e.contains("circuit open")), "{:?}", refused.events);
}

#[tokio::test]
async fn a_dead_collector_costs_no_order_and_its_drops_are_counted() {
    let dead = format!("http://127.0.0.1:{}", crate::kit::free_port());
    let service = TestBinary::new(Backend::Postgres)
        .await
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    let running = service.start().await;
    for _ in 0..5 {
        let response = service
            .http
            .post(service.url("/v1/orders"))
            .json(&serde_json::json!({ "user_id": ADA, "product_code": "classic-box" }))
            .send()
            .await
            .expect("order");
        assert_eq!(response.status(), 201, "a dead collector never fails an order");
    }
    let dropped = eventually(
        Duration::from_secs(20),
        async || {
            let text =
                service.http.get(service.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
            sample(&text, "otel_spans_dropped_total", &[("reason", "export_failed")])
        },
        |dropped| *dropped >= 5.0,
    )
    .await;
    assert!(dropped >= 5.0, "spans of 5 orders dropped and counted, got {dropped}");
    drop(running);
}

#[tokio::test]
async fn log_lines_inside_a_span_carry_its_trace_and_span_ids() {
    let collector = Collector::start().await;
    let service = traced(&collector).await;
    let running = service.start().await;
    let (status, _) = order(&service, ADA, "classic-box", "00f067aa0ba902b9").await;
    assert_eq!(status, 201);
    let spans = eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), |s| s.len() >= 6).await;
    let server = only(&spans, "POST /v1/orders").clone();
    let output = running.output();
    let line = output
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "request" && l["status"] == 201)
        .expect("the request's log line");
    assert_eq!(line["span"]["trace_id"], CALLER_TRACE, "{line}");
    assert_eq!(line["span"]["span_id"], server.span_id.as_str(), "{line}");
}

/// A caller's "not sampled" is kept, and it costs the order no span but its server span: nothing
/// is exported, and both upstreams are handed the server span's context (flags `00`, the trace
/// id of the `traceresponse`), not the context of attempt spans that were never made.
#[tokio::test]
async fn an_unsampled_order_exports_nothing_and_tells_its_upstreams_so() {
    const UNSAMPLED_TRACE: &str = "5cf92f3577b34da6a3ce929d0e0e4737";
    let collector = Collector::start().await;
    let service =
        collector.receiving_from(TestBinary::with_upstreams(Backend::Sqlite, Upstreams::healthy().await).await);
    let _running = service.start().await;

    let caller = format!("00-{UNSAMPLED_TRACE}-00f067aa0ba902d1-00");
    let (status, traceresponse) = order_as(&service, ADA, "classic-box", &caller).await;
    assert_eq!(status, 201);
    assert!(traceresponse.starts_with(&format!("00-{UNSAMPLED_TRACE}-")) && traceresponse.ends_with("-00"));
    let (users, products) = service.upstreams.mocks();
    for server in [users, products] {
        let received = server.received_requests().await.unwrap_or_default();
        let sent: Vec<_> = received.iter().map(|r| r.headers.get("traceparent").cloned()).collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].as_ref().map(|v| v.as_bytes()), Some(traceresponse.as_bytes()), "{sent:?}");
    }

    // A sampled order after it is exported whole: the collector works, and the unsampled one
    // left nothing in it.
    let (status, _) = order(&service, ADA, "classic-box", "00f067aa0ba902d2").await;
    assert_eq!(status, 201);
    let spans = eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), |s| s.len() >= 6).await;
    assert_eq!(only(&spans, "place order").name, "place order");
    assert!(collector.trace(UNSAMPLED_TRACE).is_empty(), "{:?}", collector.trace(UNSAMPLED_TRACE));
}

/// The exporter sends OTLP/HTTP protobuf with the headers of `OTEL_EXPORTER_OTLP_HEADERS`
/// (percent-decoded, as the specification has them): a vendor's API key reaches the collector.
#[tokio::test]
async fn exports_carry_the_configured_headers_and_the_protobuf_content_type() {
    let collector = Collector::start().await;
    let service = traced(&collector).await.env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt,x-team=orders");
    let _running = service.start().await;

    let (status, _) = order(&service, ADA, "classic-box", "00f067aa0ba902b7").await;
    assert_eq!(status, 201);
    let sent = eventually(Duration::from_secs(20), async || collector.request_headers(), |h| !h.is_empty()).await;
    let first = sent.first().expect("an export request");
    assert_eq!(first.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
    assert_eq!(first.get("api-key").and_then(|v| v.to_str().ok()), Some("s3cr=t"));
    assert_eq!(first.get("x-team").and_then(|v| v.to_str().ok()), Some("orders"));
    assert!(!collector.trace(CALLER_TRACE).is_empty(), "and the body decoded as spans");
}
