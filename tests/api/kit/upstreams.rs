//! Where the app under test finds its user and product services: the project's simulator
//! in-process, or wiremock servers when a test counts calls or shapes answers.

use upstream_sim::{RunningSim, SimConfig};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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

    /// Mounts Ada Lovelace and the Classic Box, answering at once.
    pub async fn mount_healthy(&self) {
        let (users, products) = self.mocks();
        Mock::given(method("GET"))
            .and(path("/users/7c11e1ce2741"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"id": "7c11e1ce2741", "firstName": "Ada", "lastName": "Lovelace"}
            )))
            .mount(users)
            .await;
        Mock::given(method("GET"))
            .and(path("/products/classic-box"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"code": "classic-box", "name": "Classic Box", "price": 9.99}
            )))
            .mount(products)
            .await;
    }

    /// Every request either upstream received.
    pub async fn received(&self) -> usize {
        let (users, products) = self.mocks();
        users.received_requests().await.unwrap_or_default().len()
            + products.received_requests().await.unwrap_or_default().len()
    }
}
