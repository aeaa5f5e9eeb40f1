//! What both backends share about idempotency keys: the row they read back when a key is
//! already taken, and what it means for the request asking. The SQL lives with each backend.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::idempotency::{HeldLease, KeyClaim, StoredResponse};
use crate::domain::store::StoreError;

/// A key that another request leased or completed.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyRow {
    fingerprint: String,
    order_id: Option<Uuid>,
    response_status: Option<i32>,
    response_body: Option<String>,
    created_at: DateTime<Utc>,
    locked_until: DateTime<Utc>,
}

impl KeyRow {
    pub(super) fn into_claim(self, fingerprint: &str) -> Result<KeyClaim, StoreError> {
        let same_request = self.fingerprint == fingerprint;
        let held = HeldLease { since: self.created_at, until: self.locked_until };
        match (self.response_status, self.order_id, self.response_body) {
            (None, _, _) => Ok(KeyClaim::InFlight { same_request, held }),
            (Some(status), Some(order_id), Some(body)) => {
                let status = u16::try_from(status).map_err(|_| corrupt("response_status out of range"))?;
                Ok(KeyClaim::Completed { same_request, response: StoredResponse { status, order_id, body } })
            }
            _ => Err(corrupt("a completed key lacks its order or body")),
        }
    }
}

fn corrupt(why: &str) -> StoreError {
    StoreError::from(sqlx::Error::Decode(format!("idempotency_keys: {why}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINCE: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

    fn row(status: Option<i32>, body: Option<&str>) -> KeyRow {
        KeyRow {
            fingerprint: "f".into(),
            order_id: status.map(|_| Uuid::nil()),
            response_status: status,
            response_body: body.map(Into::into),
            created_at: SINCE,
            locked_until: SINCE + chrono::Duration::seconds(30),
        }
    }

    #[test]
    fn a_row_without_a_response_is_in_flight_with_its_lease() {
        let held = HeldLease { since: SINCE, until: SINCE + chrono::Duration::seconds(30) };
        assert_eq!(row(None, None).into_claim("f").ok(), Some(KeyClaim::InFlight { same_request: true, held }));
        assert_eq!(row(None, None).into_claim("g").ok(), Some(KeyClaim::InFlight { same_request: false, held }));
    }

    #[test]
    fn a_completed_row_replays_its_response() {
        let Ok(KeyClaim::Completed { same_request, response }) = row(Some(201), Some("{}")).into_claim("f") else {
            panic!("expected a completed key");
        };
        assert!(same_request);
        assert_eq!(response, StoredResponse { status: 201, order_id: Uuid::nil(), body: "{}".into() });
    }

    #[test]
    fn a_half_completed_row_is_corrupt_not_replayed() {
        assert!(matches!(row(Some(201), None).into_claim("f"), Err(StoreError::Query(_))));
        assert!(matches!(row(Some(-1), Some("{}")).into_claim("f"), Err(StoreError::Query(_))));
    }
}
