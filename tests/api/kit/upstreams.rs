//! Where the app under test finds its user and product services: the project's simulator
//! in-process, or wiremock servers when a test counts calls or shapes answers.

use std::time::Duration;

use upstream_sim::{RunningSim, SimConfig};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Ada Lovelace's user id, known to the simulator and to the mocks of [`Upstreams::healthy`].
pub const ADA: &str = "7c11e1ce2741";

/// Where the app under test finds its upstreams.
pub enum Upstreams {
    /// The project's simulator with the fault table of DESIGN.md.
    Simulator(RunningSim),
    /// wiremock servers, for counting requests or shaping answers.
    Mock { users: MockServer, products: MockServer },
}

impl Upstreams {
    pub async fn simulator() -> Self {
        Upstreams::Simulator(upstream_sim::spawn(SimConfig::ephemeral()).await.expect("simulator"))
    }

    /// Empty wiremock servers: every request gets 404 until a test mounts a mock.
    pub async fn mock() -> Self {
        Upstreams::Mock { users: MockServer::start().await, products: MockServer::start().await }
    }

    /// wiremock servers that know Ada and the Classic Box and answer at once.
    pub async fn healthy() -> Self {
        Self::answering_after(Duration::ZERO).await
    }

    /// wiremock servers that know Ada and the Classic Box and answer each lookup after `delay`
    /// (so requests overlap when a test needs them to).
    pub async fn answering_after(delay: Duration) -> Self {
        let upstreams = Self::mock().await;
        upstreams.mount_ada(delay).await;
        upstreams.mount_classic_box(delay).await;
        upstreams
    }

    /// The user and product services' base URLs.
    pub fn urls(&self) -> (String, String) {
        match self {
            Upstreams::Simulator(sim) => (sim.users_url(), sim.products_url()),
            Upstreams::Mock { users, products } => (users.uri(), products.uri()),
        }
    }

    pub fn sim(&self) -> &RunningSim {
        match self {
            Upstreams::Simulator(sim) => sim,
            Upstreams::Mock { .. } => panic!("this test runs on wiremock upstreams"),
        }
    }

    pub fn mocks(&self) -> (&MockServer, &MockServer) {
        match self {
            Upstreams::Mock { users, products } => (users, products),
            Upstreams::Simulator(_) => panic!("this test runs on the simulator"),
        }
    }

    /// Mounts Ada Lovelace on the user-service mock, answering after `delay`.
    pub async fn mount_ada(&self, delay: Duration) {
        let ada = serde_json::json!({"id": ADA, "firstName": "Ada", "lastName": "Lovelace"});
        let answer = ResponseTemplate::new(200).set_body_json(ada).set_delay(delay);
        Mock::given(method("GET")).and(path(format!("/users/{ADA}"))).respond_with(answer).mount(self.mocks().0).await;
    }

    /// Mounts the Classic Box (9.99) on the product-service mock, answering after `delay`.
    pub async fn mount_classic_box(&self, delay: Duration) {
        let classic = serde_json::json!({"code": "classic-box", "name": "Classic Box", "price": 9.99});
        let answer = ResponseTemplate::new(200).set_body_json(classic).set_delay(delay);
        Mock::given(method("GET")).and(path("/products/classic-box")).respond_with(answer).mount(self.mocks().1).await;
    }

    /// Every request either upstream received.
    pub async fn received(&self) -> usize {
        let (users, products) = self.mocks();
        requests_to(users).await + requests_to(products).await
    }
}

/// How many requests one wiremock server received.
pub async fn requests_to(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}
