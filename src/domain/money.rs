//! Money as integer cents, so amounts are stored and compared exactly on every backend.

use std::fmt;

use serde::{Serialize, Serializer};

/// A non-negative amount in cents (the upstream prices are in one currency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money {
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an amount with at most two decimals: {0:?}")]
pub struct InvalidAmount(pub String);

/// Exclusive bound on amounts: a decimal of at most 15 significant digits survives the f64 of a
/// JSON number both ways (2^53 does not: 70761050482378.59 printed back as ….60).
const MAX_CENTS: i64 = 1_000_000_000_000_000;

impl Money {
    pub fn from_cents(cents: i64) -> Result<Self, InvalidAmount> {
        if (0..MAX_CENTS).contains(&cents) { Ok(Self { cents }) } else { Err(InvalidAmount(cents.to_string())) }
    }

    pub fn cents(self) -> i64 {
        self.cents
    }

    /// Parses a JSON number's text (`9.99`, `10`, `10.5`) exactly, without a float round trip.
    /// More than two decimals, exponents and negatives are refused rather than rounded.
    pub fn parse_decimal(text: &str) -> Result<Self, InvalidAmount> {
        let bad = || InvalidAmount(text.to_owned());
        let (whole, frac) = match text.split_once('.') {
            // Trailing zeros (`9.990`) change nothing; they are not extra precision.
            Some((whole, frac)) if !frac.is_empty() => (whole, frac.trim_end_matches('0')),
            Some(_) => return Err(bad()),
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 2 {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let frac_cents: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let cents = whole.checked_mul(100).and_then(|c| c.checked_add(frac_cents)).ok_or_else(bad)?;
        Self::from_cents(cents).map_err(|_| bad())
    }

    /// The amount as a JSON number: exact, because every amount below [`MAX_CENTS`] prints back
    /// as the same decimal.
    pub fn as_f64(self) -> f64 {
        self.cents as f64 / 100.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prices_exactly() {
        let cases =
            [("9.99", 999), ("14.99", 1499), ("10", 1000), ("10.5", 1050), ("0", 0), ("9.990", 999), ("0.10", 10)];
        for (text, cents) in cases {
            assert_eq!(Money::parse_decimal(text).map(Money::cents), Ok(cents), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_store_exactly() {
        for text in ["9.999", "-1", "1e3", "", ".5", "5.", "NaN", "1.2.3", "99999999999999999999"] {
            assert!(Money::parse_decimal(text).is_err(), "{text}");
        }
    }

    #[test]
    fn serializes_as_the_same_decimal() {
        for text in ["9.99", "14.99", "0.1", "1234567.89", "0.01"] {
            let money = Money::parse_decimal(text).expect(text);
            assert_eq!(serde_json::to_string(&money).expect("json"), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn every_cent_amount_round_trips_through_json(cents in 0i64..MAX_CENTS) {
            let money = Money::from_cents(cents).expect("in range");
            let json = serde_json::to_string(&money).expect("json");
            let number: serde_json::Number = serde_json::from_str(&json).expect("number");
            proptest::prop_assert_eq!(Money::parse_decimal(&number.to_string()), Ok(money));
        }
    }
}
