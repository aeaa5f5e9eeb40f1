//! An order as stored and shown, and the event payload that is committed with it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::ids::{ProductCode, UserId};
use super::lookup::Upstream;
use super::money::Money;

/// What user-service tells us about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub first_name: String,
    pub last_name: String,
}

impl User {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// What product-service tells us about a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    pub price: Money,
}

/// A placed order; `published` says whether its event has been confirmed by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// UUIDv7: unique without coordination and ordered by creation, which keyset paging uses.
    pub id: Uuid,
    pub user_id: String,
    pub product_code: String,
    pub customer_fullname: String,
    pub product_name: String,
    pub total_amount: Money,
    /// Millisecond precision, so what is returned at creation equals what every backend reads back.
    pub created_at: DateTime<Utc>,
    pub published: bool,
    /// The upstreams whose answer was a stale one (stale-if-error), in [`Upstream::ALL`]
    /// order; empty when both answers were live.
    pub degraded: Vec<Upstream>,
}

impl Order {
    pub fn new(user_id: &UserId, product_code: &ProductCode, user: &User, product: &Product) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id: user_id.as_str().to_owned(),
            product_code: product_code.as_str().to_owned(),
            customer_fullname: user.full_name(),
            product_name: product.name.clone(),
            total_amount: product.price,
            created_at: Utc::now().trunc_subsecs(3),
            published: false,
            degraded: Vec::new(),
        }
    }

    /// The same order, placed with stale answers from `upstreams`.
    pub fn degraded_by(mut self, upstreams: &[Upstream]) -> Self {
        self.degraded = Upstream::ALL.into_iter().filter(|u| upstreams.contains(u)).collect();
        self
    }

    /// The `payload` of the `order.created` event (docs/contracts.md); the relay adds the envelope.
    pub fn created_payload(&self) -> serde_json::Value {
        serde_json::json!({ "order": OrderCreated::from(self) })
    }
}

/// The `payload.order` object of the event contract.
#[derive(Debug, Serialize)]
struct OrderCreated<'a> {
    order_id: Uuid,
    customer_fullname: &'a str,
    product_name: &'a str,
    total_amount: Money,
    created_at: String,
}

impl<'a> From<&'a Order> for OrderCreated<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            order_id: order.id,
            customer_fullname: &order.customer_fullname,
            product_name: &order.product_name,
            total_amount: order.total_amount,
            created_at: rfc3339(order.created_at),
        }
    }
}

/// RFC 3339 in UTC with milliseconds and `Z`, the one timestamp format of the API and events.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Order {
        let user = User { first_name: "Ada".into(), last_name: "Lovelace".into() };
        let product = Product { name: "Classic Box".into(), price: Money::parse_decimal("9.99").expect("price") };
        Order::new(
            &UserId::parse("7c11e1ce2741").expect("id"),
            &ProductCode::parse("classic-box").expect("code"),
            &user,
            &product,
        )
    }

    #[test]
    fn a_new_order_joins_the_names_and_takes_the_price() {
        let order = sample();
        assert_eq!(order.customer_fullname, "Ada Lovelace");
        assert_eq!(order.total_amount.cents(), 999);
        assert_eq!(order.id.get_version_num(), 7);
        assert!(!order.published);
    }

    #[test]
    fn the_event_payload_is_the_contract() {
        let order = sample();
        let payload = order.created_payload();
        let keys: Vec<&str> = payload["order"].as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
        assert_eq!(payload["order"]["order_id"], order.id.to_string());
        assert_eq!(payload["order"]["customer_fullname"], "Ada Lovelace");
        assert_eq!(payload["order"]["product_name"], "Classic Box");
        assert_eq!(payload["order"]["total_amount"], serde_json::json!(9.99));
        let created = payload["order"]["created_at"].as_str().expect("string");
        assert!(created.ends_with('Z'), "{created}");
        assert_eq!(DateTime::parse_from_rfc3339(created).expect("rfc3339"), order.created_at);
    }
}
