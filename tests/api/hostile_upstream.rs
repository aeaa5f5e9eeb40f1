//! Upstreams that answer oddly or not at all: a 4xx or 3xx is asked once and never sent
//! elsewhere, a hang opens the breaker whatever the deadline, breakers and series read true
//! without traffic, and unknown ids do not cost both upstreams again and again.

use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Backend, TestApp, Upstreams, problem};

const ADA: &str = "7c11e1ce2741";

/// wiremock upstreams with the Classic Box healthy and the user-service answering `status`
/// (with `headers`) for Ada.
async fn user_service_answering(status: u16, headers: &[(&str, String)]) -> Upstreams {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_healthy().await;
    let (users, _) = upstreams.mocks();
    users.reset().await;
    let mut answer = ResponseTemplate::new(status);
    for (name, value) in headers {
        answer = answer.insert_header(*name, value.as_str());
    }
    Mock::given(method("GET")).and(path(format!("/users/{ADA}"))).respond_with(answer).mount(users).await;
    upstreams
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

#[tokio::test]
async fn an_upstream_403_is_asked_once_answers_502_naming_it_and_opens_no_breaker() {
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(user_service_answering(403, &[]).await)
        // Breakers that would open on the first handful of failures, had the 403s counted.
        .env("USER_BREAKER_KEY_MIN_CALLS", "2")
        .env("USER_BREAKER_MIN_CALLS", "2")
        .env("USER_BREAKER_MIN_FAILING_KEYS", "1")
        .env("USER_BREAKER_OPEN_MS", "60000")
        .spawn()
        .await;

    let orders = 8;
    for order in 1..=orders {
        let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
        assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")), "order {order}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("403")), "names the status: {body}");
        let (users, _) = app.upstreams.mocks();
        assert_eq!(requests(users).await, order, "one request per order, never retried");
    }
    assert_eq!(app.breaker("user").await, ("closed".to_owned(), 0), "a 4xx says nothing about health");
}

#[tokio::test]
async fn a_redirect_is_never_followed_to_another_host() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"id": ADA, "firstName": "Eve", "lastName": "Dropper"}
        )))
        .mount(&elsewhere)
        .await;
    let location = format!("{}/users/{ADA}", elsewhere.uri());
    let app = TestApp::builder(Backend::Sqlite)
        .upstreams(user_service_answering(302, &[("location", location)]).await)
        .spawn()
        .await;

    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (502, Some("/problems/upstream-error")));
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("302")), "names the status: {body}");
    assert_eq!(requests(&elsewhere).await, 0, "the redirect's target never saw our lookup");
    let (users, _) = app.upstreams.mocks();
    assert_eq!(requests(users).await, 1, "a 3xx is not retried");
}
