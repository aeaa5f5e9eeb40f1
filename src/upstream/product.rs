//! product-service's wire format: `{"code","name","price"}`, price a JSON number.

use serde::Deserialize;

use super::Decode;
use crate::domain::{Money, Product};

#[derive(Deserialize)]
struct Wire {
    name: String,
    /// Kept as the number's text so the price is parsed exactly, never through a float.
    price: serde_json::Number,
}

impl Decode for Product {
    fn decode(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("product: {e}"))?;
        let price = Money::parse_decimal(&wire.price.to_string()).map_err(|e| format!("product price: {e}"))?;
        Ok(Product { name: wire.name, price })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_price_exactly() {
        let product = Product::decode(br#"{"code":"classic-box","name":"Classic Box","price":9.99}"#).expect("valid");
        assert_eq!((product.name.as_str(), product.price.cents()), ("Classic Box", 999));
    }

    #[test]
    fn refuses_prices_it_cannot_store() {
        for body in [
            r#"{"name":"x","price":"9.99"}"#,
            r#"{"name":"x","price":-1}"#,
            r#"{"name":"x","price":9.999}"#,
            r#"{"name":"x"}"#,
        ] {
            assert!(Product::decode(body.as_bytes()).is_err(), "{body}");
        }
    }
}
