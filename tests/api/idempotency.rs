//! `Idempotency-Key`: a repeated request replays the first order instead of placing another,
//! on PostgreSQL and SQLite, under concurrency and across a kill -9 of the real binary.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use order_service::domain::StoreError;
use order_service::domain::idempotency::KeyTimes;
use order_service::domain::idempotency::{HeldLease, IdempotencyKey, KeyClaim, KeyLease, KeySettings};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::kit::{
    ADA, BROKER, Backend, TestApp, TestBinary, TestConsumer, TestDb, Upstreams, message_id, problem, sample,
    sample_order,
};

crate::on_both_backends!(
    a_repeat_replays_the_first_response_without_calling_the_upstreams,
    the_same_key_for_another_order_is_refused,
    a_failed_order_frees_its_key_for_the_retry,
    concurrent_duplicates_place_one_order_and_publish_one_event,
    leases_expire_keys_are_forgotten_and_a_lost_lease_writes_nothing,
    a_409_says_how_long_the_key_stays_held,
);

const BOX: &str = "classic-box";

async fn post_keyed(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.http.post(app.url("/v1/orders")).header("Idempotency-Key", key).json(body).send().await.expect("request")
}

async fn a_repeat_replays_the_first_response_without_calling_the_upstreams(backend: Backend) {
    let app = TestApp::builder(backend).upstreams(Upstreams::healthy().await).spawn().await;
    let key = Uuid::now_v7().to_string();

    let first = post_keyed(&app, &key, &json!({"user_id": ADA, "product_code": BOX})).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none(), "the first response is not a replay");
    let location = first.headers()["location"].clone();
    let first_body = first.bytes().await.expect("body");
    let calls = app.upstreams.received().await;
    assert_eq!(calls, 2, "one lookup per upstream");

    // Same order, other field order and spacing, key sent as a structured-field string.
    let raw = format!(r#"{{ "product_code" : "{BOX}",  "user_id": "{ADA}" }}"#);
    let again = app
        .http
        .post(app.url("/v1/orders"))
        .header("Idempotency-Key", format!("\"{key}\""))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_eq!(again.bytes().await.expect("body"), first_body, "the first body, byte for byte");

    assert_eq!(app.upstreams.received().await, calls, "a replay calls no upstream");
    assert_eq!(app.db.count("orders").await, 1);
    assert_eq!(app.db.count("outbox").await, 1);
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "orders_created_total", &[]), 1.0);
    assert_eq!(sample(&metrics, "orders_replayed_total", &[]), 1.0);

    // A different key is a different order.
    let other = post_keyed(&app, &Uuid::now_v7().to_string(), &json!({"user_id": ADA, "product_code": BOX})).await;
    assert_eq!(other.status(), 201);
    assert_eq!(app.db.count("orders").await, 2);
}

async fn the_same_key_for_another_order_is_refused(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await; // the simulator: Alan exists too
    let key = "order-42";
    assert_eq!(post_keyed(&app, key, &json!({"user_id": ADA, "product_code": BOX})).await.status(), 201);

    let (status, body) =
        problem(post_keyed(&app, key, &json!({"user_id": "e6f24d7d1c7e", "product_code": BOX})).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["type"], "/problems/idempotency-key-reused");
    assert_eq!(app.db.count("orders").await, 1, "no second order");

    for bad in ["", "has space", "ключ", &"k".repeat(256)] {
        let response = app
            .http
            .post(app.url("/v1/orders"))
            .header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).expect("header"))
            .json(&json!({"user_id": ADA, "product_code": BOX}))
            .send()
            .await
            .expect("request");
        let (status, body) = problem(response).await;
        assert_eq!((status, body["type"].as_str()), (400, Some("/problems/malformed-request")), "{bad:?}");
        assert!(body["detail"].as_str().is_some_and(|d| d.starts_with("Idempotency-Key")), "{body}");
    }
    assert_eq!(app.db.count("orders").await, 1);
}

async fn a_failed_order_frees_its_key_for_the_retry(backend: Backend) {
    let upstreams = Upstreams::mock().await;
    upstreams.mount_ada(Duration::ZERO).await;
    // The product fails every attempt of the first order, then recovers.
    Mock::given(method("GET"))
        .and(path(format!("/products/{BOX}")))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(upstreams.mocks().1)
        .await;
    upstreams.mount_classic_box(Duration::ZERO).await;
    let app = TestApp::builder(backend).upstreams(upstreams).env("PRODUCT_MAX_ATTEMPTS", "3").spawn().await;
    let body = json!({"user_id": ADA, "product_code": BOX});

    let (status, _) = problem(post_keyed(&app, "retry-me", &body).await).await;
    assert_eq!(status, 502, "all three attempts failed");
    assert_eq!(app.db.count("orders").await, 0);

    let retry = post_keyed(&app, "retry-me", &body).await;
    assert_eq!(retry.status(), 201, "the failure was not kept with the key");
    assert!(retry.headers().get("idempotent-replayed").is_none());
    let replay = post_keyed(&app, "retry-me", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.db.count("orders").await, 1);
}

async fn concurrent_duplicates_place_one_order_and_publish_one_event(backend: Backend) {
    const CLIENTS: usize = 8;
    let mut consumer = TestConsumer::bind().await;
    let app = TestApp::builder(backend)
        .upstreams(Upstreams::answering_after(Duration::from_millis(300)).await)
        .env("AMQP_URL", BROKER)
        .env("OUTBOX_POLL_INTERVAL_MS", "50")
        .spawn()
        .await;
    let key = Uuid::now_v7().to_string();
    let body = json!({"user_id": ADA, "product_code": BOX});
    let requests = (0..CLIENTS).map(|_| {
        let (http, url, key, body) = (app.http.clone(), app.url("/v1/orders"), key.clone(), body.clone());
        tokio::spawn(async move {
            let response = http.post(url).header("Idempotency-Key", key).json(&body).send().await.expect("request");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
            (status, retry_after, response.json::<Value>().await.expect("json"))
        })
    });
    let mut created = Vec::new();
    let mut in_flight = 0;
    for request in requests.collect::<Vec<_>>() {
        let (status, retry_after, body) = request.await.expect("client");
        match status {
            201 => created.push(body["id"].as_str().expect("id").to_owned()),
            409 => {
                assert_eq!(body["type"], "/problems/idempotency-key-in-flight");
                // Until the first request's order must be done: the longest order is 2 s + 1 s.
                let seconds = retry_after.and_then(|s| s.parse::<u64>().ok());
                assert!(seconds.is_some_and(|s| (1..=3).contains(&s)), "Retry-After {seconds:?}");
                in_flight += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!created.is_empty(), "one request placed the order");
    assert!(created.iter().all(|id| *id == created[0]), "every 201 names the same order: {created:?}");
    assert_eq!(created.len() + in_flight, CLIENTS);
    assert_eq!(app.db.count("orders").await, 1);
    assert!(app.db.count("outbox").await <= 1, "one event row at most (deleted once published)");

    // Wait long enough for a second event to show up, if there were one.
    let events = consumer.take(&created[..1], 2, Duration::from_secs(3)).await;
    assert_eq!(events.iter().map(message_id).collect::<Vec<_>>(), [created[0].clone()], "exactly one event");
    println!(
        "idempotency, {CLIENTS} concurrent identical requests: 201s {} (1 order id), 409s {in_flight}, orders 1, events {}",
        created.len(),
        events.len()
    );
}

/// The store's rules on a clock the test controls.
async fn leases_expire_keys_are_forgotten_and_a_lost_lease_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.stores(2).await.orders;
    let settings = KeySettings {
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
        longest_order: Duration::from_secs(3),
    };
    // Whole seconds, so the lease instants read back compare equal on both backends.
    let t0 = Utc::now().trunc_subsecs(0);
    let at = |secs: i64| settings.times(t0 + chrono::Duration::seconds(secs));
    let key = IdempotencyKey::parse("k-1").expect("key");
    let lease = |n: u128| KeyLease { key: key.clone(), token: Uuid::from_u128(n) };
    let claim = |n: u128, fingerprint: &'static str, times: KeyTimes| {
        let (store, lease) = (store.clone(), lease(n));
        async move { store.claim_key(&lease, fingerprint, times).await.expect("claim") }
    };

    assert_eq!(claim(1, "a", at(0)).await, KeyClaim::Leased(lease(1)));
    let held = HeldLease { since: at(0).now, until: at(0).lease_until };
    assert_eq!(claim(2, "a", at(10)).await, KeyClaim::InFlight { same_request: true, held });
    assert_eq!(claim(2, "b", at(10)).await, KeyClaim::InFlight { same_request: false, held });
    // Lease 1 (a crashed request, say) expires; the next request takes the key over.
    assert_eq!(claim(2, "a", at(31)).await, KeyClaim::Leased(lease(2)));

    // The old holder can neither complete nor release the key any more.
    let order = sample_order();
    let stale = order_service::domain::idempotency::KeyCompletion { lease: lease(1), status: 201, body: "{}".into() };
    assert!(matches!(store.insert_order(&order, Some(&stale)).await, Err(StoreError::KeyLeaseLost)));
    assert_eq!(db.count("orders").await, 0, "a lost lease rolls the order back");
    store.release_key(&lease(1)).await.expect("release");
    let held = HeldLease { since: at(31).now, until: at(31).lease_until };
    assert_eq!(claim(3, "a", at(32)).await, KeyClaim::InFlight { same_request: true, held }, "still held by lease 2");

    let done =
        order_service::domain::idempotency::KeyCompletion { lease: lease(2), status: 201, body: "{\"x\":1}".into() };
    store.insert_order(&order, Some(&done)).await.expect("insert");
    let KeyClaim::Completed { same_request: true, response } = claim(3, "a", at(40)).await else {
        panic!("expected the completed key");
    };
    assert_eq!((response.status, response.order_id, response.body.as_str()), (201, order.id, "{\"x\":1}"));
    store.release_key(&lease(2)).await.expect("release");
    assert!(matches!(claim(3, "a", at(41)).await, KeyClaim::Completed { .. }), "a completed key is not released");

    // After the retention period the key is forgotten: purged, and free for a new order.
    assert_eq!(store.purge_keys(t0 + chrono::Duration::seconds(60)).await.expect("purge"), 0);
    assert_eq!(store.purge_keys(t0 + chrono::Duration::seconds(3700)).await.expect("purge"), 1);
    assert_eq!(db.count("idempotency_keys").await, 0);
    assert_eq!(claim(4, "b", at(3700)).await, KeyClaim::Leased(lease(4)));
    assert_eq!(db.count("orders").await, 1, "forgetting a key keeps its order");
}

/// Leases a key as a request would, `age` ago for `lease`, straight into the database (a crashed
/// request leaves exactly such a row).
async fn lease_key_directly(db: &TestDb, key: &str, age: chrono::Duration, lease: chrono::Duration) {
    let now = Utc::now();
    let fingerprint = order_service::domain::idempotency::fingerprint(ADA, BOX);
    let (since, until, expires) = (now - age, now - age + lease, now + chrono::Duration::days(1));
    let sql = "INSERT INTO idempotency_keys (key, fingerprint, token, locked_until, expires_at, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6)";
    match db.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            let query = sqlx::query(sql).bind(key).bind(&fingerprint).bind(Uuid::now_v7()).bind(until);
            query.bind(expires).bind(since).execute(&mut conn).await.expect("insert a leased key");
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.expect("connect");
            let query = sqlx::query(sql).bind(key).bind(&fingerprint).bind(Uuid::now_v7()).bind(until);
            query.bind(expires).bind(since).execute(&mut conn).await.expect("insert a leased key");
        }
    }
}

/// `Retry-After` of a 409: the time until the holder's order must be done (a live request), or
/// until its lease runs out (a request that crashed long ago), never a blind `1`.
async fn a_409_says_how_long_the_key_stays_held(backend: Backend) {
    let app = TestApp::builder(backend).upstreams(Upstreams::healthy().await).spawn().await;
    let body = json!({"user_id": ADA, "product_code": BOX});
    let retry_after = |response: &reqwest::Response| -> u64 {
        assert_eq!(response.status(), 409);
        response.headers()["retry-after"].to_str().ok().and_then(|s| s.parse().ok()).expect("seconds")
    };
    // Left by a crash 10 s ago with a 30 s lease: 20 s to run. (The longest order is 2 s + 1 s.)
    lease_key_directly(&app.db, "orphan", chrono::Duration::seconds(10), chrono::Duration::seconds(30)).await;
    let orphan = retry_after(&post_keyed(&app, "orphan", &body).await);
    assert!((18..=20).contains(&orphan), "Retry-After {orphan} for a lease with 20 s to run");
    // Taken a moment ago: the holder's order is done within the longest an order takes (3 s).
    lease_key_directly(&app.db, "young", chrono::Duration::zero(), chrono::Duration::seconds(30)).await;
    let young = retry_after(&post_keyed(&app, "young", &body).await);
    assert!((2..=3).contains(&young), "Retry-After {young} for a lease just taken");
    assert_eq!(app.db.count("orders").await, 0);
}

/// A completed key survives a kill -9 and a restart of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_replayed_after_a_kill_and_restart() {
    let service = TestBinary::new(Backend::Postgres).await.env("RUST_LOG", "warn");
    let post = |key: &'static str| {
        let body = json!({"user_id": ADA, "product_code": BOX});
        service.http.post(service.url("/v1/orders")).header("Idempotency-Key", key).json(&body).send()
    };

    let mut running = service.start().await;
    let first = post("survives-restart").await.expect("request");
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.expect("body");
    running.kill();

    let _restarted = service.start().await;
    let again = post("survives-restart").await.expect("request");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.expect("body"), first_body);
    assert_eq!(service.db.count("orders").await, 1);
}
