//! The order domain: identifiers, money, orders, idempotency rules and the place-order use case,
//! with the **ports** it needs from the outside — [`lookup`] (user-service, product-service),
//! [`store`] (orders and keys) and [`outbox`] (events to publish). It knows nothing of HTTP, SQL
//! or AMQP: the adapters (`upstream`, `storage`, `relay`) implement its ports, `startup` wires
//! them in.

pub mod idempotency;
pub mod ids;
pub mod lookup;
#[cfg(test)]
pub mod memory_store;
pub mod money;
pub mod order;
pub mod outbox;
pub mod place_order;
pub mod store;

pub use ids::{InvalidId, ProductCode, UserId};
pub use lookup::{Lookup, Stale, Upstream, UpstreamError};
pub use money::Money;
pub use order::{Order, Product, User};
pub use outbox::{OutboxRow, OutboxStore};
pub use place_order::{OrderService, PlaceOrderError};
pub use store::{ListFilter, MAX_PAGE, OrderStore, StoreError};
