//! The order domain: identifiers, money, orders and the place-order use case. It knows nothing
//! of HTTP, SQL or AMQP; it talks to the upstream clients and the [`crate::storage::OrderStore`].

pub mod idempotency;
pub mod ids;
pub mod money;
pub mod order;
pub mod place_order;

pub use ids::{InvalidId, ProductCode, UserId};
pub use money::Money;
pub use order::{Order, Product, User};
pub use place_order::{OrderService, PlaceOrderError};
