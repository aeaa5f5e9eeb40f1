//! Bad input gets a clear problem, and never reaches an upstream.

use serde_json::json;

use crate::kit::{Backend, TestApp, Upstreams, problem};

async fn app() -> TestApp {
    TestApp::builder(Backend::Sqlite).upstreams(Upstreams::mock().await).spawn().await
}

#[tokio::test]
async fn ids_that_could_escape_a_url_path_are_refused_before_any_upstream_call() {
    let app = app().await;
    let long = "a".repeat(65);
    let bad = ["", "../admin", "%2e%2e", "a?b=1", "a/b", "a b", "a\nb", "a\u{7}b", long.as_str(), "..", "a#b", "ü"];
    for id in bad {
        for (user_id, product_code, field) in [(id, "classic-box", "user_id"), ("7c11e1ce2741", id, "product_code")] {
            let response = app.post_order(user_id, product_code).await;
            let (status, body) = problem(response).await;
            assert_eq!(status, 422, "{field}={id:?}");
            assert_eq!(body["type"], "/problems/invalid-input", "{field}={id:?}");
            assert_eq!(body["errors"][0]["field"], field, "{body}");
        }
    }
    assert_eq!(app.upstreams.received().await, 0, "no upstream request for invalid ids");
}

#[tokio::test]
async fn malformed_bodies_are_400_problems() {
    let app = app().await;
    let cases = [
        ("not json", "{"),
        ("wrong type", r#"{"user_id": 7, "product_code": "classic-box"}"#),
        ("missing field", r#"{"user_id": "7c11e1ce2741"}"#),
        ("not an object", r#"["7c11e1ce2741", "classic-box"]"#),
        ("null", "null"),
        ("empty", ""),
    ];
    for (name, body) in cases {
        let response = app
            .http
            .post(app.url("/v1/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let (status, problem) = problem(response).await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(problem["type"], "/problems/malformed-request", "{name}");
    }
    assert_eq!(app.upstreams.received().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let app = app().await;
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .header("content-type", "text/plain")
        .body(r#"{"user_id": "7c11e1ce2741", "product_code": "classic-box"}"#)
        .send()
        .await
        .expect("request");
    let (status, body) = problem(response).await;
    assert_eq!(status, 415);
    assert_eq!(body["type"], "/problems/unsupported-media-type");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_not_read() {
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(Upstreams::mock().await)
        .env("HTTP_BODY_LIMIT_BYTES", "1024")
        .spawn()
        .await;
    let padding = "x".repeat(4096);
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .json(&json!({"user_id": "7c11e1ce2741", "product_code": "classic-box", "padding": padding}))
        .send()
        .await
        .expect("request");
    let (status, body) = problem(response).await;
    assert_eq!(status, 413);
    assert_eq!(body["type"], "/problems/payload-too-large");
    assert_eq!(app.upstreams.received().await, 0);
}

#[tokio::test]
async fn bad_list_parameters_are_problems() {
    let app = app().await;
    for (query, status) in [
        ("limit=abc", 400),
        ("limit=-1", 422),
        ("limit=99999999999999999999", 400),
        ("limit=0", 422),
        ("after=nope", 422),
        ("user_id=..%2F", 422),
    ] {
        let (got, _) = problem(app.get(&format!("/v1/orders?{query}")).await).await;
        assert_eq!(got, status, "{query}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = app().await;
    let (status, body) = problem(app.get("/v2/nothing").await).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("/problems/not-found")));
    let response = app.http.delete(app.url("/v1/orders")).send().await.expect("request");
    let (status, body) = problem(response).await;
    assert_eq!((status, body["type"].as_str()), (405, Some("/problems/method-not-allowed")));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = app().await;
    let generated = app.get("/health/live").await;
    let id = generated.headers().get("x-request-id").expect("x-request-id").to_str().expect("ascii");
    assert_eq!(uuid::Uuid::parse_str(id).map(|_| ()), Ok(()));
    let kept = app.http.get(app.url("/v1/orders/x")).header("x-request-id", "abc-123").send().await.expect("request");
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn the_request_id_and_traceparent_travel_to_both_upstreams() {
    let app = TestApp::builder(Backend::Sqlite).upstreams(Upstreams::healthy().await).spawn().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .http
        .post(app.url("/v1/orders"))
        .header("x-request-id", "req-42")
        .header("traceparent", traceparent)
        .json(&json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let (users, products) = app.upstreams.mocks();
    for server in [users, products] {
        let received = server.received_requests().await.unwrap_or_default();
        assert_eq!(received.len(), 1);
        let headers = &received[0].headers;
        assert_eq!(headers.get("x-request-id").map(|v| v.as_bytes()), Some(&b"req-42"[..]));
        assert_eq!(headers.get("traceparent").map(|v| v.as_bytes()), Some(traceparent.as_bytes()));
    }
}
