//! Liveness, readiness and the OpenAPI document.

use serde_json::Value;

use crate::kit::{Backend, TestApp};

crate::on_both_backends!(readiness_reports_the_database_and_the_disabled_broker);

async fn readiness_reports_the_database_and_the_disabled_broker(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["status"], "up");
    let expected_backend = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(body["database"]["detail"], expected_backend);
    assert_eq!(body["broker"]["status"], "disabled");
    assert!(!body.to_string().contains("postgres://"), "no URLs in health: {body}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/v1/orders", "/v1/order", "/v1/orders/{id}", "/health/live", "/health/ready", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    let create = &doc["paths"]["/v1/orders"]["post"]["responses"];
    for status in ["201", "400", "413", "415", "422", "502", "503", "504"] {
        assert!(create[status].is_object(), "POST /v1/orders lacks {status}");
    }
}
