//! The fault table as data: what each known key answers, and after how long.
//!
//! The default is `catalogue.json` beside this crate (the table of docs/contracts.md), compiled in so
//! the binary works from anywhere; `SIM_CATALOGUE=path.json` replaces it with a user's file.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// The built-in catalogue: exactly the fault table of docs/contracts.md.
pub const DEFAULT_CATALOGUE: &str = include_str!("../catalogue.json");

/// Both upstreams' entries, keyed by user id / product code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub users: Vec<Entry>,
    pub products: Vec<Entry>,
}

/// One known key. Unknown keys answer 404.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub key: String,
    /// Time before the answer is sent.
    #[serde(default)]
    pub delay_ms: u64,
    /// Status of the answer (200 unless told otherwise).
    #[serde(default = "ok")]
    pub status: u16,
    /// When set, calls alternate between this status (first call) and `status`, one
    /// alternation shared by every caller, as the real user-service does for Alan Turing.
    #[serde(default)]
    pub alternate_status: Option<u16>,
    /// Body sent with `status`; error answers carry a small JSON error body instead.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

fn ok() -> u16 {
    200
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read catalogue {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid catalogue: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("invalid catalogue: {0}")]
    Invalid(String),
}

impl Catalogue {
    pub fn parse(json: &str) -> Result<Self, CatalogueError> {
        let catalogue: Catalogue = serde_json::from_str(json)?;
        for entry in catalogue.users.iter().chain(&catalogue.products) {
            for status in std::iter::once(entry.status).chain(entry.alternate_status) {
                if !(100..=599).contains(&status) {
                    return Err(CatalogueError::Invalid(format!(
                        "key {}: status {status} is not an HTTP status",
                        entry.key
                    )));
                }
            }
        }
        Ok(catalogue)
    }

    pub fn load(path: &str) -> Result<Self, CatalogueError> {
        let json =
            std::fs::read_to_string(path).map_err(|source| CatalogueError::Read { path: path.to_owned(), source })?;
        Self::parse(&json)
    }

    pub fn builtin() -> Self {
        #[expect(clippy::expect_used, reason = "the built-in catalogue is tested below")]
        Self::parse(DEFAULT_CATALOGUE).expect("built-in catalogue is valid")
    }
}

impl Entry {
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
}

/// Entries by key, for O(1) lookup per request.
pub(crate) fn index(entries: &[Entry]) -> HashMap<String, Entry> {
    entries.iter().map(|e| (e.key.clone(), e.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_is_the_fault_table() {
        let c = Catalogue::builtin();
        let users = index(&c.users);
        let products = index(&c.products);
        assert_eq!(users["7c11e1ce2741"].delay_ms, 300);
        assert_eq!(users["e6f24d7d1c7e"].alternate_status, Some(500));
        assert_eq!(products["classic-box"].delay_ms, 200);
        assert_eq!(products["family-box"].delay_ms, 60_000);
        assert_eq!(products["veggie-box"].status, 500);
        assert_eq!(users.len(), 2);
        assert_eq!(products.len(), 3);
    }

    #[test]
    fn rejects_a_status_that_is_not_http() {
        let err = Catalogue::parse(r#"{"users":[{"key":"a","status":42}],"products":[]}"#)
            .expect_err("status 42 must be rejected");
        assert!(err.to_string().contains("status 42"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(Catalogue::parse(r#"{"users":[{"key":"a","dealy_ms":1}],"products":[]}"#).is_err());
    }
}
