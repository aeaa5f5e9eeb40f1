//! `/docs` as a person sees it: Debian's headless chromium loads the page from the running app
//! and the rendered DOM must show the API's title and its operations. The page must work
//! offline (nothing from a CDN) and stay up when the API sheds load.

use std::time::Duration;

use wiremock::matchers::any;
use wiremock::{Mock, ResponseTemplate};

use crate::kit::{Backend, TestApp, Upstreams, eventually, problem};

/// `CHROMIUM` names the browser; Debian's package installs `chromium`.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// The DOM chromium renders for `url`, scripts run (10 s of virtual time).
async fn rendered_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("order-service-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut command = tokio::process::Command::new(chromium());
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "this test needs a headless browser: `apt-get install -y chromium` (or set CHROMIUM to one); \
             CI installs it in .ci/run"
        ),
        Err(e) => panic!("cannot run {}: {e}", chromium()),
    };
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_the_api_in_a_browser() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let dom = tokio::time::timeout(Duration::from_secs(90), rendered_dom(&app.url("/docs")))
        .await
        .expect("chromium finished in time");
    assert!(dom.contains(r#"class="title">order-service"#), "the API's title is shown: {dom}");
    for (method, path) in [
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders"),
        ("GET", "/v1/orders/{id}"),
        ("POST", "/v1/order"),
        ("GET", "/health/ready"),
    ] {
        let operation = dom.split(r#"class="opblock opblock-"#).skip(1).any(|block| {
            block.contains(&format!(r#"opblock-summary-method">{method}<"#))
                && block.contains(&format!(r#"data-path="{path}""#))
        });
        assert!(operation, "{method} {path} is listed on the page");
    }
}

#[tokio::test]
async fn the_docs_page_loads_nothing_from_elsewhere_and_a_missing_file_is_a_problem() {
    let app = TestApp::builder(Backend::Sqlite).spawn().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(external), "the page loads {external}…: {html}");
    }
    let initializer = app.get("/docs/swagger-initializer.js").await.text().await.expect("js");
    assert!(initializer.contains("\"url\": \"/openapi.json\""), "{initializer}");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "no call to validator.swagger.io: {initializer}");
    let (status, _) = problem(app.get("/docs/no-such-file.js").await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_docs_page_is_served_while_the_api_sheds_load() {
    let upstreams = Upstreams::mock().await;
    let (users, products) = upstreams.mocks();
    for server in [users, products] {
        let slow = ResponseTemplate::new(404).set_delay(Duration::from_secs(2));
        Mock::given(any()).respond_with(slow).mount(server).await;
    }
    let app = TestApp::builder(Backend::Sqlite).upstreams(upstreams).env("HTTP_MAX_IN_FLIGHT", "1").spawn().await;
    let holder = app.post_order_in_background("u1", "p1");
    eventually(Duration::from_secs(10), || app.upstreams.received(), |&n| n > 0).await;
    // Reads have a limit of their own: a second order is what the full write limit sheds.
    let (status, body) = problem(app.post_order("u2", "p2").await).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/load-shed")), "the API is full");
    assert_eq!(app.get("/docs/").await.status(), 200, "the docs are never shed");
    holder.abort();
}
