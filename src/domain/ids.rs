//! Identifiers that travel into upstream URL paths, so they are parsed, never trusted.

use std::fmt;

/// Longest id accepted; the upstreams' ids are far shorter.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused; `Display` is the client-facing reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may contain only letters A-Z a-z, digits, '_' and '-'")]
    BadCharacter,
}

/// Accepts 1..=64 characters of `[A-Za-z0-9_-]`: nothing that could change a URL's meaning
/// (`/`, `.`, `%`, `?`, `#`, spaces, control characters, non-ASCII).
pub fn check_id(raw: &str) -> Result<(), InvalidId> {
    if raw.is_empty() {
        return Err(InvalidId::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong);
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(InvalidId::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                check_id(raw).map(|()| Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A user-service id, e.g. `7c11e1ce2741`.
    UserId
);
id_type!(
    /// A product-service code, e.g. `classic-box`.
    ProductCode
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_fault_table_ids() {
        for id in ["7c11e1ce2741", "e6f24d7d1c7e", "classic-box", "family_box", "A-Z_0"] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
        assert_eq!(check_id(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn refuses_anything_that_could_escape_a_url_path() {
        let cases = [
            ("", InvalidId::Empty),
            (&"a".repeat(65), InvalidId::TooLong),
            ("../admin", InvalidId::BadCharacter),
            ("%2e%2e", InvalidId::BadCharacter),
            ("a?b=c", InvalidId::BadCharacter),
            ("a/b", InvalidId::BadCharacter),
            ("a b", InvalidId::BadCharacter),
            ("a\nb", InvalidId::BadCharacter),
            ("a\u{0}", InvalidId::BadCharacter),
            ("a#b", InvalidId::BadCharacter),
            ("ä", InvalidId::BadCharacter),
            (".", InvalidId::BadCharacter),
        ];
        for (raw, expected) in cases {
            assert_eq!(check_id(raw), Err(expected), "{raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_ids_are_exactly_the_safe_alphabet(raw in "\\PC{0,80}") {
            let safe = !raw.is_empty()
                && raw.len() <= MAX_ID_LEN
                && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            proptest::prop_assert_eq!(UserId::parse(&raw).is_ok(), safe);
        }
    }
}
