//! Create, read back and list orders, on PostgreSQL and on SQLite.

use serde_json::Value;

use crate::kit::{Backend, TestApp, Upstreams, problem};

crate::on_both_backends!(
    an_order_is_created_read_back_and_listed,
    the_older_post_path_behaves_the_same,
    the_order_and_its_outbox_row_are_committed_together,
    neither_row_is_kept_when_the_outbox_insert_fails,
    pages_follow_each_other_without_gaps_or_repeats,
    an_unknown_order_id_is_a_404_problem,
);

async fn an_order_is_created_read_back_and_listed(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;

    let response = app.post_order("7c11e1ce2741", "classic-box").await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    let created: Value = response.json().await.expect("json");

    let id = created["id"].as_str().expect("id is a string");
    assert_eq!(uuid::Uuid::parse_str(id).expect("uuid").get_version_num(), 7);
    assert_eq!(location, format!("/v1/orders/{id}"));
    assert_eq!(created["user_id"], "7c11e1ce2741");
    assert_eq!(created["product_code"], "classic-box");
    assert_eq!(created["customer_fullname"], "Ada Lovelace");
    assert_eq!(created["product_name"], "Classic Box");
    assert_eq!(created["total_amount"], serde_json::json!(9.99));
    assert_eq!(created["published"], false, "no AMQP_URL: the event waits in the outbox");
    let created_at = created["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with('Z'), "{created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");
    assert_eq!(created["degraded"], serde_json::json!([]), "both answers were live");
    assert_eq!(created.as_object().map(|o| o.len()), Some(9), "{created}");

    let fetched: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(fetched, created);

    let page: Value = app.get("/v1/orders?user_id=7c11e1ce2741").await.json().await.expect("json");
    assert_eq!(page["items"], serde_json::json!([created]));
    assert_eq!(page["next_after"], Value::Null);
    let other: Value = app.get("/v1/orders?user_id=e6f24d7d1c7e").await.json().await.expect("json");
    assert_eq!(other["items"], serde_json::json!([]));
}

async fn the_older_post_path_behaves_the_same(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let response = app
        .http
        .post(app.url("/v1/order"))
        .json(&serde_json::json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["customer_fullname"], "Ada Lovelace");
    assert_eq!(app.db.count("orders").await, 1);
}

async fn the_order_and_its_outbox_row_are_committed_together(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let created: Value = app.post_order("7c11e1ce2741", "classic-box").await.json().await.expect("json");

    assert_eq!(app.db.count("orders").await, 1);
    assert_eq!(app.db.count("outbox").await, 1);
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 1);
    assert_eq!(app.db.scalar_text("SELECT event_type FROM outbox").await, "order.created");
    assert_eq!(app.db.scalar_i64("SELECT total_amount_cents FROM orders").await, 999);
    let payload: Value =
        serde_json::from_str(&app.db.scalar_text("SELECT CAST(payload AS TEXT) FROM outbox").await).expect("payload");
    let expected = serde_json::json!({"order": {
        "order_id": created["id"],
        "customer_fullname": "Ada Lovelace",
        "product_name": "Classic Box",
        "total_amount": 9.99,
        "created_at": created["created_at"],
    }});
    assert_eq!(payload, expected);
}

async fn neither_row_is_kept_when_the_outbox_insert_fails(backend: Backend) {
    let app = TestApp::builder(backend).upstreams(Upstreams::healthy().await).spawn().await;
    // Sabotage the second statement of the transaction only.
    match backend {
        Backend::Postgres => {
            app.db.execute("ALTER TABLE outbox ADD CONSTRAINT sabotage CHECK (event_type <> 'order.created')").await;
        }
        Backend::Sqlite => {
            app.db
                .execute("CREATE TRIGGER sabotage BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'sabotage'); END")
                .await;
        }
    }

    let (status, body) = problem(app.post_order("7c11e1ce2741", "classic-box").await).await;
    assert_eq!(status, 500);
    assert_eq!(body["type"], "/problems/internal-error");
    assert!(!body.to_string().contains("sabotage"), "internal cause leaked: {body}");
    assert_eq!(app.db.count("orders").await, 0, "the order row must roll back with the outbox row");
    assert_eq!(app.db.count("outbox").await, 0);
}

async fn pages_follow_each_other_without_gaps_or_repeats(backend: Backend) {
    let app = TestApp::builder(backend).upstreams(Upstreams::healthy().await).spawn().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        let order: Value = app.post_order("7c11e1ce2741", "classic-box").await.json().await.expect("json");
        created.push(order["id"].as_str().expect("id").to_owned());
    }

    let mut seen = Vec::new();
    let mut query = "/v1/orders?user_id=7c11e1ce2741&limit=2".to_owned();
    for _ in 0..10 {
        let page: Value = app.get(&query).await.json().await.expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|o| o["id"].as_str().expect("id").to_owned()));
        match page["next_after"].as_str() {
            Some(after) => query = format!("/v1/orders?user_id=7c11e1ce2741&limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, created, "creation order, each order once");

    let everything: Value = app.get("/v1/orders?limit=1000").await.json().await.expect("json");
    assert_eq!(everything["items"].as_array().map(Vec::len), Some(5), "a large limit is capped, not refused");
}

async fn an_unknown_order_id_is_a_404_problem(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    for path in [format!("/v1/orders/{}", uuid::Uuid::now_v7()), "/v1/orders/not-a-uuid".to_owned()] {
        let (status, body) = problem(app.get(&path).await).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["type"], "/problems/not-found");
    }
}
