//! Stale-if-error end to end: a product outage after a good order still places orders for
//! that product, marked `degraded`, stored so and read back; an unseen product, a too old
//! answer and a 404 never do.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::kit::{ADA, Backend, TestApp, Upstreams, problem, sample};

/// `chaos/outage product`: the port refuses connections until lifted.
async fn product_outage(app: &TestApp) {
    let fault = json!({"upstream": "product", "fault": {"type": "outage"}});
    let admin = app.upstreams.sim().admin_url();
    let injected = app.http.post(format!("{admin}/__admin/faults")).json(&fault).send().await.expect("sim admin");
    assert_eq!(injected.status(), 201);
}

async fn after_a_product_outage_a_known_product_still_sells_marked_degraded(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let live: Value = app.post_order(ADA, "classic-box").await.json().await.expect("json");
    assert_eq!(live["degraded"], json!([]));
    product_outage(&app).await;

    let response = app.post_order(ADA, "classic-box").await;
    assert_eq!(response.status(), 201, "the last good answer stood in");
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    let degraded: Value = response.json().await.expect("json");
    assert_eq!(degraded["degraded"], json!(["product"]));
    assert_eq!((&degraded["product_name"], &degraded["total_amount"]), (&live["product_name"], &live["total_amount"]));
    let read: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(read, degraded, "stored with the order and read back");
    let listed: Value = app.get("/v1/orders?user_id=7c11e1ce2741").await.json().await.expect("json");
    assert_eq!(listed["items"][0]["degraded"], json!([]));
    assert_eq!(listed["items"][1]["degraded"], json!(["product"]));

    // A replay of a degraded order says so too.
    let body = json!({"user_id": ADA, "product_code": "classic-box"});
    let keyed = || app.http.post(app.url("/v1/orders")).header("idempotency-key", "stale-1").json(&body);
    let first: Value = keyed().send().await.expect("send").json().await.expect("json");
    let replay = keyed().send().await.expect("send");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.expect("json"), first);
    assert_eq!(first["degraded"], json!(["product"]));

    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "upstream_fallbacks_total", &[("upstream", "product")]), 2.0);
    assert_eq!(sample(&metrics, "upstream_fallbacks_total", &[("upstream", "user")]), 0.0);
}

crate::on_both_backends!(after_a_product_outage_a_known_product_still_sells_marked_degraded);

#[tokio::test]
async fn during_the_outage_a_product_never_seen_fails_as_before() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    product_outage(&app).await;
    let (status, body) = problem(app.post_order(ADA, "veggie-box").await).await;
    assert!(matches!(status, 502 | 503), "{status} {body}");
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "upstream_fallbacks_total", &[]), 0.0);
}

#[tokio::test]
async fn an_answer_older_than_the_maximum_staleness_is_not_used() {
    let app = TestApp::builder(Backend::Sqlite).env("PRODUCT_STALE_IF_ERROR_MS", "300").spawn().await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    tokio::time::sleep(Duration::from_millis(400)).await;
    product_outage(&app).await;
    let (status, _) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!(status, 502, "too stale: the order fails as it would have");
}

#[tokio::test]
async fn a_404_is_never_answered_from_memory() {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    let app = TestApp::builder(Backend::Sqlite).upstreams(upstreams).env("PRODUCT_NOT_FOUND_TTL_MS", "0").spawn().await;
    let (_, products) = app.upstreams.mocks();
    let answer = |status: u16| {
        let body = json!({"code": "classic-box", "name": "Classic Box", "price": 9.99});
        Mock::given(method("GET"))
            .and(path("/products/classic-box"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
    };

    answer(200).up_to_n_times(1).mount(products).await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201, "a good answer, kept");
    products.reset().await;
    answer(404).up_to_n_times(1).mount(products).await;
    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/unknown-product")), "a 404 is an answer");
    products.reset().await;
    answer(503).mount(products).await;
    let (status, _) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!(status, 502, "the 404 forgot the kept answer: the product no longer exists");
}
