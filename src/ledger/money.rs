//! Money: integer USDC base units (6 decimals) everywhere inside the node,
//! `rust_decimal` at the edges. [`Usd`] serializes as a JSON *number* written
//! from its decimal text (`10.50`, `0.0045`), never through `f64`, and
//! [`parse_usd`] reads a JSON number or string exactly.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Serialize, Serializer};

/// USDC's decimals.
pub const DECIMALS: u32 = 6;

/// Largest amount a balance or a single credit may hold: 2^53 − 1 base units
/// (about 9 billion USDC), so every figure is exact in the Lua scripts'
/// doubles as well as in Redis's 64-bit integers.
pub const MAX_UNITS: u64 = (1 << 53) - 1;

/// An amount of USD(C) in base units (1 = 0.000001 USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(pub u64);

impl Usd {
    /// Zero.
    pub const ZERO: Usd = Usd(0);

    /// The amount as a decimal number of dollars.
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), DECIMALS)
    }

    /// An exact decimal amount (at most 6 decimal places, not negative, not
    /// above [`MAX_UNITS`]).
    pub fn from_decimal(d: Decimal) -> Option<Usd> {
        if d.is_sign_negative() && !d.is_zero() {
            return None;
        }
        let units = d.checked_mul(Decimal::from(1_000_000u32))?;
        if units.fract() != Decimal::ZERO {
            return None;
        }
        units.to_u64().filter(|u| *u <= MAX_UNITS).map(Usd)
    }

    /// A decimal amount rounded up to the next base unit (charges never
    /// round in the payer's disfavour by more than one base unit, and never
    /// down to zero).
    pub fn from_decimal_ceil(d: Decimal) -> Option<Usd> {
        if d.is_sign_negative() && !d.is_zero() {
            return None;
        }
        let up = d.round_dp_with_strategy(DECIMALS, RoundingStrategy::AwayFromZero);
        Usd::from_decimal(up)
    }

    /// The dollar text: at least two decimals, no trailing zeros beyond them
    /// (`10.50`, `0.0045`, `0.00`).
    pub fn text(self) -> String {
        // Integer formatting (exact, one allocation): this runs for every
        // amount of every answer, `GET /v1/balance` included.
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let mut digits = format!("{frac:06}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        format!("{whole}.{digits}")
    }

    /// Saturating subtraction.
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A raw JSON number: serde_json writes the text as is. (Turned into a
        // `serde_json::Value` it would go through f64: answers serialize
        // their typed structs directly.)
        let raw = serde_json::value::RawValue::from_string(self.text())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "US dollars as an exact decimal number (USDC has 6 decimals), e.g. 10.50",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Usd {}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a number.
    #[error("is not a number")]
    NotANumber,
    /// Negative.
    #[error("must not be negative")]
    Negative,
    /// More than 6 decimals.
    #[error("has more than 6 decimal places (USDC's precision)")]
    TooPrecise,
    /// Too large.
    #[error("is too large")]
    TooLarge,
}

/// Reads a USD amount from a JSON number or string's raw text (`10.00`,
/// `"10.00"`, `1e1`), exactly.
pub fn parse_usd(raw: &str) -> Result<Usd, AmountError> {
    let text = raw.trim().trim_matches('"').trim();
    if text.is_empty() {
        return Err(AmountError::NotANumber);
    }
    let d = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    }
    .map_err(|_| AmountError::NotANumber)?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(AmountError::Negative);
    }
    if d.normalize().scale() > DECIMALS {
        return Err(AmountError::TooPrecise);
    }
    Usd::from_decimal(d).ok_or(AmountError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_two_decimals_at_least_and_no_float() {
        assert_eq!(Usd(10_500_000).text(), "10.50");
        assert_eq!(Usd(4_500).text(), "0.0045");
        assert_eq!(Usd(0).text(), "0.00");
        assert_eq!(Usd(3).text(), "0.000003");
        assert_eq!(Usd(45_500_000).text(), "45.50");
        assert_eq!(Usd(MAX_UNITS).text(), "9007199254.740991");
        for u in [
            0u64,
            1,
            10,
            100_000,
            1_000_000,
            1_234_500,
            987_654_321,
            MAX_UNITS,
        ] {
            let mut d = Usd(u).to_decimal().normalize();
            if d.scale() < 2 {
                d.rescale(2);
            }
            assert_eq!(
                Usd(u).text(),
                d.to_string(),
                "the same text as rust_decimal's"
            );
        }
        #[derive(Serialize)]
        struct B {
            available: Usd,
        }
        assert_eq!(
            serde_json::to_string(&B {
                available: Usd(10_500_000)
            })
            .expect("json"),
            r#"{"available":10.50}"#
        );
    }

    #[test]
    fn parsing_is_exact() {
        assert_eq!(parse_usd("10.00"), Ok(Usd(10_000_000)));
        assert_eq!(parse_usd("\"0.000001\""), Ok(Usd(1)));
        assert_eq!(parse_usd("1e1"), Ok(Usd(10_000_000)));
        assert_eq!(parse_usd("0.1"), Ok(Usd(100_000)));
        assert_eq!(parse_usd("0.0000001"), Err(AmountError::TooPrecise));
        assert_eq!(parse_usd("-1"), Err(AmountError::Negative));
        assert_eq!(parse_usd("abc"), Err(AmountError::NotANumber));
        assert_eq!(parse_usd("1e20"), Err(AmountError::TooLarge));
        assert_eq!(parse_usd("10000000000"), Err(AmountError::TooLarge));
    }

    #[test]
    fn ceil_rounds_up_to_a_base_unit() {
        let d = Decimal::from_str("0.0000001").expect("d");
        assert_eq!(Usd::from_decimal_ceil(d), Some(Usd(1)));
        let d = Decimal::from_str("0.0045").expect("d");
        assert_eq!(Usd::from_decimal_ceil(d), Some(Usd(4_500)));
    }
}
