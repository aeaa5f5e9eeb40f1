//! Faults injected through the admin API change what the simulated upstreams do.

use std::time::Duration;

use serde_json::{Value, json};
use upstream_sim::{RunningSim, SimConfig};

async fn sim() -> (RunningSim, reqwest::Client) {
    let sim = upstream_sim::spawn(SimConfig::ephemeral()).await.expect("simulator");
    (sim, reqwest::Client::builder().no_proxy().build().expect("client"))
}

async fn inject(http: &reqwest::Client, sim: &RunningSim, fault: Value) -> Value {
    let response = http.post(format!("{}/__admin/faults", sim.admin_url())).json(&fault).send().await.expect("admin");
    assert_eq!(response.status(), 201, "{fault}");
    response.json().await.expect("json")
}

async fn restore(http: &reqwest::Client, sim: &RunningSim) {
    let response = http.delete(format!("{}/__admin/faults", sim.admin_url())).send().await.expect("admin");
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn an_error_rate_on_one_key_leaves_the_others_alone_until_restored() {
    let (sim, http) = sim().await;
    inject(&http, &sim, json!({"upstream": "product", "key": "classic-box", "fault": {"type": "errors", "percent": 100, "status": 503}})).await;
    let classic = format!("{}/products/classic-box", sim.products_url());
    assert_eq!(http.get(&classic).send().await.expect("get").status(), 503);
    assert_eq!(http.get(format!("{}/products/unknown", sim.products_url())).send().await.expect("get").status(), 404);
    let listed: Value =
        http.get(format!("{}/__admin/faults", sim.admin_url())).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    restore(&http, &sim).await;
    assert_eq!(http.get(&classic).send().await.expect("get").status(), 200);
}

#[tokio::test]
async fn an_outage_refuses_connections_and_ends_when_lifted() {
    let (sim, http) = sim().await;
    let url = format!("{}/users/7c11e1ce2741", sim.users_url());
    inject(&http, &sim, json!({"upstream": "user", "fault": {"type": "outage"}})).await;
    let mut refused = false;
    for _ in 0..50 {
        // A fresh client each time: no pooled connection to reuse.
        let fresh = reqwest::Client::builder().no_proxy().build().expect("client");
        match fresh.get(&url).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "connections are refused during an outage");
    restore(&http, &sim).await;
    let mut back = false;
    for _ in 0..50 {
        let fresh = reqwest::Client::builder().no_proxy().build().expect("client");
        if fresh.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the port listens again after restore");
}

#[tokio::test]
async fn a_reset_ends_the_connection_without_an_answer() {
    let (sim, http) = sim().await;
    inject(&http, &sim, json!({"upstream": "product", "fault": {"type": "reset"}})).await;
    let result = http.get(format!("{}/products/classic-box", sim.products_url())).send().await;
    match result {
        Err(e) => assert!(!e.is_timeout(), "{e}"),
        Ok(response) => assert!(response.bytes().await.is_err(), "no complete answer"),
    }
}

#[tokio::test]
async fn a_hang_with_a_duration_lifts_itself() {
    let (sim, http) = sim().await;
    let fault = inject(&http, &sim, json!({"upstream": "user", "fault": {"type": "hang"}, "duration_ms": 300})).await;
    assert!(fault["remaining_ms"].as_u64().is_some_and(|ms| ms <= 300));
    let url = format!("{}/users/7c11e1ce2741", sim.users_url());
    let hung = http.get(&url).timeout(Duration::from_millis(200)).send().await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(http.get(&url).send().await.expect("get").status(), 200);
    let listed: Value =
        http.get(format!("{}/__admin/faults", sim.admin_url())).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn a_dribbled_body_still_arrives_whole() {
    let (sim, http) = sim().await;
    inject(
        &http,
        &sim,
        json!({"upstream": "product", "key": "classic-box", "fault": {"type": "dribble", "bytes_per_sec": 400}}),
    )
    .await;
    let body: Value = http
        .get(format!("{}/products/classic-box", sim.products_url()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["name"], "Classic Box");
}

#[tokio::test]
async fn a_delay_is_listed_and_can_be_lifted_by_id() {
    let (sim, http) = sim().await;
    let fault =
        inject(&http, &sim, json!({"upstream": "product", "fault": {"type": "delay", "ms": 1500, "jitter_ms": 100}}))
            .await;
    let id = fault["id"].as_u64().expect("id");
    let gone = http.delete(format!("{}/__admin/faults/{id}", sim.admin_url())).send().await.expect("delete");
    assert_eq!(gone.status(), 204);
    let again = http.delete(format!("{}/__admin/faults/{id}", sim.admin_url())).send().await.expect("delete");
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn a_malformed_fault_is_refused_with_a_reason() {
    let (sim, http) = sim().await;
    for bad in [
        json!({"upstream": "user", "key": "k", "fault": {"type": "outage"}}),
        json!({"upstream": "user", "fault": {"type": "errors", "percent": 150}}),
        json!({"upstream": "nobody", "fault": {"type": "outage"}}),
        json!({"upstream": "user", "fault": {"type": "earthquake"}}),
    ] {
        let response = http.post(format!("{}/__admin/faults", sim.admin_url())).json(&bad).send().await.expect("admin");
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.expect("json");
        assert!(body["error"].is_string());
    }
}

/// An outage is in force when the admin API answers: a pooled keep-alive connection that just
/// got an answer is closed too, so the very next request on that client fails.
#[tokio::test]
async fn an_outage_closes_pooled_connections_before_the_admin_api_answers() {
    let (sim, admin) = sim().await;
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let url = format!("{}/users/7c11e1ce2741", sim.users_url());
    for _ in 0..3 {
        assert_eq!(client.get(&url).send().await.expect("get").status(), 200, "before the outage");
    }
    inject(&admin, &sim, json!({"upstream": "user", "fault": {"type": "outage"}})).await;
    let next = client.get(&url).timeout(Duration::from_secs(5)).send().await;
    assert!(next.as_ref().is_err_and(|e| !e.is_timeout()), "the next request fails at once: {next:?}");

    // Restoring is in force when the admin API answers too.
    restore(&admin, &sim).await;
    assert_eq!(client.get(&url).send().await.expect("get").status(), 200, "listening again");
}

/// A real outage also cuts requests in flight: a hung request's connection is closed.
#[tokio::test]
async fn an_outage_cuts_requests_in_flight() {
    let (sim, admin) = sim().await;
    inject(&admin, &sim, json!({"upstream": "product", "key": "classic-box", "fault": {"type": "hang"}})).await;
    let hung = {
        let url = format!("{}/products/classic-box", sim.products_url());
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        tokio::spawn(async move { client.get(url).timeout(Duration::from_secs(10)).send().await })
    };
    while sim.sim.stats().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    inject(&admin, &sim, json!({"upstream": "product", "fault": {"type": "outage"}})).await;
    assert_eq!(sim.sim.stats().in_flight, 0, "nothing is being served once the outage is in force");
    let result = hung.await.expect("task");
    assert!(result.as_ref().is_err_and(|e| !e.is_timeout()), "the hung request was cut: {result:?}");
}

/// Waits (bounded) until no work is going on, and returns the stats.
async fn after_the_work(sim: &RunningSim) -> upstream_sim::Stats {
    for _ in 0..500 {
        if sim.sim.stats().working == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.sim.stats()
}

/// family-box works 60 s; its caller says it waits 100 ms (and hangs up at 300 ms).
async fn ask_for_the_family_box(sim: &RunningSim, http: &reqwest::Client, header: Option<&str>) {
    let mut get = http.get(format!("{}/products/family-box", sim.products_url())).timeout(Duration::from_millis(300));
    if let Some(ms) = header {
        get = get.header("x-envoy-expected-rq-timeout-ms", ms);
    }
    let answer = get.send().await;
    assert!(answer.is_err_and(|e| e.is_timeout()), "nothing is answered to a caller that stopped waiting");
}

#[tokio::test]
async fn work_stops_once_the_callers_deadline_has_passed_and_is_counted_as_abandoned() {
    let (sim, http) = sim().await;
    ask_for_the_family_box(&sim, &http, Some("100")).await;
    let stats = after_the_work(&sim).await;
    assert_eq!(stats.working, 0, "the 60 s of work stopped at the caller's deadline");
    let products = stats.products;
    assert_eq!((products.abandoned, products.work_done_ms, products.work_saved_ms), (1, 100, 59_900));

    // Work that fits in the caller's time is done and answered as usual.
    let classic = http
        .get(format!("{}/products/classic-box", sim.products_url()))
        .header("x-envoy-expected-rq-timeout-ms", "800")
        .send()
        .await
        .expect("answer");
    assert_eq!(classic.status(), 200);
    let products = sim.sim.stats().products;
    assert_eq!((products.abandoned, products.work_done_ms), (1, 300), "200 ms more work, nothing abandoned");
}

#[tokio::test]
async fn without_the_header_or_when_told_to_ignore_it_the_work_goes_on_after_the_caller_left() {
    let (sim, http) = sim().await;
    ask_for_the_family_box(&sim, &http, None).await;
    let ignoring =
        upstream_sim::spawn(SimConfig { honour_deadline: false, ..SimConfig::ephemeral() }).await.expect("sim");
    ask_for_the_family_box(&ignoring, &http, Some("100")).await;
    for stats in [sim.sim.stats(), ignoring.sim.stats()] {
        assert_eq!((stats.working, stats.products.abandoned), (1, 0), "a hang-up does not stop a real server's work");
    }
}
