//! `cargo bench --bench resilience`: the resilience figures of issue 3, each printed next to a
//! baseline measured in the same run (absolute numbers drift on shared machines; ratios less).
//!
//! Everything runs on loopback: the upstream simulator with the fault table, and the service
//! on a throw-away SQLite file. Bounded: about 40 s in all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use order_service::{Application, Config};
use upstream_sim::SimConfig;

const ADA: &str = "7c11e1ce2741";

struct App {
    base: String,
    http: reqwest::Client,
    _db: TempDb,
}

struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn start(users: &str, products: &str, extra: &[(&str, &str)]) -> App {
    let file = std::env::temp_dir().join(format!("order-bench-{}.db", uuid::Uuid::new_v4().simple()));
    let mut env: HashMap<String, String> = HashMap::from([
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), format!("sqlite://{}", file.display())),
        ("USER_SERVICE_URL".into(), users.into()),
        ("PRODUCT_SERVICE_URL".into(), products.into()),
    ]);
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let app = Application::build(config).await.expect("app");
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    App { base, http: reqwest::Client::new(), _db: TempDb(file) }
}

impl App {
    async fn order(&self, user: &str, product: &str) -> (u16, Duration) {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/orders", self.base))
            .json(&serde_json::json!({"user_id": user, "product_code": product}))
            .send()
            .await
            .expect("response");
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        (status, started.elapsed())
    }

    async fn get(&self, path: &str) -> Duration {
        let started = Instant::now();
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("response");
        let _ = response.bytes().await;
        started.elapsed()
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text =
            self.http.get(format!("{}/metrics", self.base)).send().await.expect("metrics").text().await.expect("text");
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    scenario: &'static str,
    figure: String,
    baseline: String,
    ratio: f64,
    goal: &'static str,
}

#[tokio::main]
async fn main() {
    let sim = upstream_sim::spawn(SimConfig::ephemeral()).await.expect("simulator");
    let (users, products) = (sim.users_url(), sim.products_url());
    let mut rows = Vec::new();
    let direct = reqwest::Client::new();

    // Baseline: the slower upstream, measured directly (user-service, 300 ms).
    let mut upstream = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let _ = direct.get(format!("{users}/users/{ADA}")).send().await.expect("user").bytes().await;
        upstream.push(started.elapsed());
    }
    let upstream_p50 = percentile(&mut upstream, 50.0);

    // Fan-out and isolation: classic-box alone, then with 16 family-box orders hanging.
    let app = start(&users, &products, &[]).await;
    let mut alone = Vec::new();
    for _ in 0..30 {
        let (status, took) = app.order(ADA, "classic-box").await;
        assert_eq!(status, 201);
        alone.push(took);
    }
    let (alone_p50, alone_p99) = (percentile(&mut alone, 50.0), percentile(&mut alone, 99.0));
    rows.push(Row {
        scenario: "fan-out: classic-box p50",
        figure: format!("{:.1} ms", ms(alone_p50)),
        baseline: format!("{:.1} ms (user-service direct p50)", ms(upstream_p50)),
        ratio: ms(alone_p50) / ms(upstream_p50),
        goal: "p50 ≤ baseline + 2 ms",
    });

    let hang = (0..16)
        .map(|_| {
            let (http, url) = (app.http.clone(), format!("{}/v1/orders", app.base));
            tokio::spawn(async move {
                let body = serde_json::json!({"user_id": ADA, "product_code": "family-box"});
                http.post(url).json(&body).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut loaded = Vec::new();
    for _ in 0..30 {
        let (status, took) = app.order(ADA, "classic-box").await;
        assert_eq!(status, 201);
        loaded.push(took);
    }
    for h in hang {
        let _ = h.await;
    }
    let loaded_p99 = percentile(&mut loaded, 99.0);
    rows.push(Row {
        scenario: "isolation: classic-box p99 with 16 family-box in flight",
        figure: format!("{:.1} ms", ms(loaded_p99)),
        baseline: format!("{:.1} ms (classic-box p99 alone)", ms(alone_p99)),
        ratio: ms(loaded_p99) / ms(alone_p99),
        goal: "≤ 1.1",
    });

    // Fail fast: a fresh service (its family-box breaker closed) answering a family-box order.
    let fresh = start(&users, &products, &[]).await;
    let (status, took) = fresh.order(ADA, "family-box").await;
    assert_eq!(status, 504);
    rows.push(Row {
        scenario: "fail fast: family-box answer",
        figure: format!("{:.1} ms", ms(took)),
        baseline: "2000 ms (ORDER_DEADLINE_MS)".into(),
        ratio: ms(took) / 2000.0,
        goal: "≤ 1.05",
    });

    // Whole product outage (connection refused) for 10 s under load: attempts per order.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let outage = start(&users, &dead, &[]).await;
    let clients = (0..8)
        .map(|_| {
            let (http, base) = (outage.http.clone(), outage.base.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut orders = 0u32;
                while started.elapsed() < Duration::from_secs(10) {
                    let body = serde_json::json!({"user_id": ADA, "product_code": "classic-box"});
                    let _ = http.post(format!("{base}/v1/orders")).json(&body).send().await;
                    orders += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                orders
            })
        })
        .collect::<Vec<_>>();
    let mut orders = 0;
    for c in clients {
        orders += c.await.expect("client");
    }
    let attempts =
        outage.metric("upstream_requests_total", &[("upstream", "product"), ("outcome", "connect_error")]).await;
    rows.push(Row {
        scenario: "amplification: product attempts per order, 10 s outage",
        figure: format!("{attempts} attempts / {orders} orders"),
        baseline: "1.0".into(),
        ratio: attempts / f64::from(orders),
        goal: "≤ 1.2",
    });

    // Open circuit: rejection time vs a trivial endpoint, same service, same run.
    let mut rejected = Vec::new();
    let mut live = Vec::new();
    for _ in 0..300 {
        let (status, took) = outage.order(ADA, "classic-box").await;
        assert_eq!(status, 503);
        rejected.push(took);
        live.push(outage.get("/health/live").await);
    }
    let (rejected_p99, live_p99) = (percentile(&mut rejected, 99.0), percentile(&mut live, 99.0));
    rows.push(Row {
        scenario: "open circuit: rejected order p99 (client-side)",
        figure: format!("{:.3} ms", ms(rejected_p99)),
        baseline: format!("{:.3} ms (GET /health/live p99)", ms(live_p99)),
        ratio: ms(rejected_p99) / ms(live_p99),
        goal: "≤ 1.5, < 1 ms",
    });

    println!("| scenario | figure | baseline (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {:.3} | {} |", r.scenario, r.figure, r.baseline, r.ratio, r.goal);
    }
}
