//! user-service's wire format: `{"id","firstName","lastName"}`.

use serde::Deserialize;

use super::Decode;
use crate::domain::User;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    first_name: String,
    last_name: String,
}

impl Decode for User {
    fn decode(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("user: {e}"))?;
        Ok(User { first_name: wire.first_name, last_name: wire.last_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_contract_and_refuses_missing_fields() {
        let user = User::decode(br#"{"id":"7c11e1ce2741","firstName":"Ada","lastName":"Lovelace"}"#);
        assert_eq!(user.map(|u| u.full_name()), Ok("Ada Lovelace".to_owned()));
        assert!(User::decode(br#"{"id":"x","firstName":"Ada"}"#).is_err());
        assert!(User::decode(b"<html>").is_err());
    }
}
