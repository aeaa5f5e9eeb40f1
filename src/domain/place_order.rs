//! The use case: look up the user and the product at once, then store the order with its event.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ids::{ProductCode, UserId};
use super::order::{Order, Product, User};
use crate::storage::{OrderStore, StoreError};
use crate::upstream::{Upstream, UpstreamClient, UpstreamError};

/// Why an order was not placed. Each variant maps to one HTTP problem in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("user-service does not know this user")]
    UnknownUser,
    #[error("product-service does not know this product")]
    UnknownProduct,
    #[error("{upstream}-service: {source}")]
    Upstream {
        upstream: Upstream,
        source: UpstreamError,
    },
    #[error("the order's deadline ran out waiting on the upstreams")]
    DeadlineExceeded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Places orders; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct OrderService {
    users: UpstreamClient<User>,
    products: UpstreamClient<Product>,
    store: Arc<dyn OrderStore>,
    deadline: Duration,
}

impl OrderService {
    pub fn new(
        users: UpstreamClient<User>,
        products: UpstreamClient<Product>,
        store: Arc<dyn OrderStore>,
        deadline: Duration,
    ) -> Self {
        Self {
            users,
            products,
            store,
            deadline,
        }
    }

    /// Fetches both upstreams concurrently within the deadline; the first definitive failure
    /// drops (cancels) the other fetch. Then order and outbox row commit in one transaction.
    pub async fn place_order(
        &self,
        user_id: &UserId,
        product_code: &ProductCode,
    ) -> Result<Order, PlaceOrderError> {
        let deadline = Instant::now() + self.deadline;
        let user = async {
            match self.users.fetch(user_id.as_str(), deadline).await {
                Ok(Some(user)) => Ok(user),
                Ok(None) => Err(PlaceOrderError::UnknownUser),
                Err(source) => Err(upstream_failure(Upstream::User, source)),
            }
        };
        let product = async {
            match self.products.fetch(product_code.as_str(), deadline).await {
                Ok(Some(product)) => Ok(product),
                Ok(None) => Err(PlaceOrderError::UnknownProduct),
                Err(source) => Err(upstream_failure(Upstream::Product, source)),
            }
        };
        let (user, product) =
            tokio::time::timeout_at(deadline, async { tokio::try_join!(user, product) })
                .await
                .map_err(|_| PlaceOrderError::DeadlineExceeded)??;
        let order = Order::new(user_id, product_code, &user, &product);
        self.store.insert_order(&order).await?;
        Ok(order)
    }
}

fn upstream_failure(upstream: Upstream, source: UpstreamError) -> PlaceOrderError {
    match source {
        UpstreamError::DeadlineExceeded => PlaceOrderError::DeadlineExceeded,
        source => PlaceOrderError::Upstream { upstream, source },
    }
}
