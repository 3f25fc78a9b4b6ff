//! Stake currencies, amount parsing and the platform fee, in exact decimal
//! arithmetic (`rust_decimal`), matching the contract's `feeFor`: the fee is
//! `fee_bps` of the stake rounded *up* to the currency's smallest unit, so a
//! client that pays `total_required` always pays enough.

use std::str::FromStr;

use alloy::primitives::{Address, U256};
use rust_decimal::{Decimal, RoundingStrategy};

/// Basis points in one whole (the contract's `FEE_DENOMINATOR`).
pub const FEE_DENOMINATOR: u32 = 10_000;

/// Largest accepted stake, in whole units. Far above any real stake, and low
/// enough that `stake × fee_bps` always fits `Decimal`'s 96-bit mantissa at
/// full precision, so the fee is exact (never silently rounded).
pub const MAX_STAKE_UNITS: u64 = 1_000_000;

/// Longest amount string accepted (digits, one dot).
const MAX_AMOUNT_CHARS: usize = 40;

/// A stake currency: Clockchain's `ETH` is native ETH on Base, `BTC` the
/// wrapped cbBTC ERC-20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    /// Native ETH (18 decimals).
    Eth,
    /// cbBTC (8 decimals).
    Btc,
}

impl Currency {
    /// `"ETH"` or `"BTC"` exactly, as the document writes them.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ETH" => Some(Currency::Eth),
            "BTC" => Some(Currency::Btc),
            _ => None,
        }
    }

    /// The document's name.
    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Eth => "ETH",
            Currency::Btc => "BTC",
        }
    }

    /// Decimal places of the smallest unit (wei, satoshi).
    pub fn decimals(self) -> u32 {
        match self {
            Currency::Eth => 18,
            Currency::Btc => 8,
        }
    }
}

/// Why an amount or currency was refused (each a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal string.
    #[error("initial_stake_amount must be a decimal string such as \"0.1\"")]
    NotDecimal,
    /// Zero or negative.
    #[error("initial_stake_amount must be greater than zero")]
    NotPositive,
    /// More decimal places than the currency has.
    #[error(
        "initial_stake_amount has more than {decimals} decimal places, the precision of {currency}"
    )]
    TooPrecise {
        /// The currency's decimals.
        decimals: u32,
        /// The currency.
        currency: &'static str,
    },
    /// Above [`MAX_STAKE_UNITS`].
    #[error("initial_stake_amount is too large (at most {MAX_STAKE_UNITS})")]
    TooLarge,
    /// Neither ETH nor BTC.
    #[error("currency must be \"ETH\" or \"BTC\"")]
    UnknownCurrency,
}

/// Parses a stake amount: plain decimal digits with at most one dot (no sign,
/// exponent, spaces or leading dot), positive, within the currency's
/// precision (trailing zeros are fine) and at most [`MAX_STAKE_UNITS`].
pub fn parse_amount(raw: &str, currency: Currency) -> Result<Decimal, AmountError> {
    if raw.starts_with('-') && raw.len() > 1 && plain_decimal(&raw[1..]) {
        return Err(AmountError::NotPositive);
    }
    if raw.len() > MAX_AMOUNT_CHARS || !plain_decimal(raw) {
        return Err(AmountError::NotDecimal);
    }
    let value = Decimal::from_str_exact(raw)
        .map_err(|_| AmountError::TooLarge)?
        .normalize();
    if value.is_zero() {
        return Err(AmountError::NotPositive);
    }
    if value.scale() > currency.decimals() {
        return Err(AmountError::TooPrecise {
            decimals: currency.decimals(),
            currency: currency.symbol(),
        });
    }
    if value > Decimal::from(MAX_STAKE_UNITS) {
        return Err(AmountError::TooLarge);
    }
    Ok(value)
}

fn plain_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// What a submission costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeQuote {
    /// The stake (normalized).
    pub stake: Decimal,
    /// The fee rate in percent (`fee_bps / 100`).
    pub fee_percentage: Decimal,
    /// The fee, rounded up to the currency's smallest unit.
    pub fee: Decimal,
    /// stake + fee: what the payment must at least be.
    pub total: Decimal,
    /// The currency.
    pub currency: Currency,
}

impl FeeQuote {
    /// The fee of `stake` at `fee_bps`, exactly as the contract's `feeFor`
    /// computes it in base units.
    pub fn new(stake: Decimal, fee_bps: u16, currency: Currency) -> Result<Self, AmountError> {
        // stake ≤ MAX_STAKE_UNITS with ≤ 18 decimals has a mantissa below
        // 10^24; times fee_bps ≤ 10^4 stays below 2^96, so the product is exact.
        let rate = Decimal::new(i64::from(fee_bps), 4);
        let exact = stake.checked_mul(rate).ok_or(AmountError::TooLarge)?;
        let fee = exact
            .round_dp_with_strategy(currency.decimals(), RoundingStrategy::AwayFromZero)
            .normalize();
        let total = stake
            .checked_add(fee)
            .ok_or(AmountError::TooLarge)?
            .normalize();
        Ok(Self {
            stake: stake.normalize(),
            fee_percentage: Decimal::new(i64::from(fee_bps), 2).normalize(),
            fee,
            total,
            currency,
        })
    }

    /// The stake in base units.
    pub fn stake_base_units(&self) -> U256 {
        to_base_units(self.stake, self.currency.decimals())
    }

    /// stake + fee in base units.
    pub fn total_base_units(&self) -> U256 {
        to_base_units(self.total, self.currency.decimals())
    }
}

/// The fee percentage as the document shows it: `"7.0"`, `"7.25"`.
pub fn format_percentage(p: Decimal) -> String {
    let s = p.normalize().to_string();
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// A non-negative decimal with at most `decimals` places in base units.
pub fn to_base_units(value: Decimal, decimals: u32) -> U256 {
    let value = value.normalize();
    let mantissa = U256::from(value.mantissa().unsigned_abs());
    let shift = decimals.saturating_sub(value.scale());
    mantissa * U256::from(10u64).pow(U256::from(shift))
}

/// Base units as a plain decimal string without trailing zeros (`"0.1"`,
/// `"2"`); works for any `U256`, beyond `Decimal`'s range.
pub fn format_units(amount: U256, decimals: u32) -> String {
    let digits = amount.to_string();
    let decimals = decimals as usize;
    let (int, frac) = if digits.len() > decimals {
        let (i, f) = digits.split_at(digits.len() - decimals);
        (i.to_owned(), f.to_owned())
    } else {
        ("0".to_owned(), format!("{digits:0>decimals$}"))
    };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int
    } else {
        format!("{int}.{frac}")
    }
}

/// A decimal from a plain string the node wrote itself (never fails on
/// well-formed input; `None` otherwise).
pub fn decimal(s: &str) -> Option<Decimal> {
    Decimal::from_str(s).ok()
}

/// The contract's `feeFor` in base units: `ceil(stake × fee_bps / 10 000)`.
pub fn fee_for(stake: U256, fee_bps: u16) -> U256 {
    let product = stake * U256::from(fee_bps);
    let d = U256::from(FEE_DENOMINATOR);
    product.div_ceil(d)
}

/// What a stake token is called in answers, and its decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLabel {
    /// `ETH`, `BTC`, `USDC`, or the token address for anything else.
    pub currency: String,
    /// Decimal places used to format amounts.
    pub decimals: u32,
}

/// Names a stake token: the zero address is native ETH, the configured cbBTC
/// is BTC, USDC is USDC (the contract allows it as a direct stake); any other
/// token is shown by address in base units.
pub fn label(token: Address, cbbtc: Option<Address>, usdc: Option<Address>) -> TokenLabel {
    let (currency, decimals) = if token == Address::ZERO {
        ("ETH".to_owned(), 18)
    } else if Some(token) == cbbtc {
        ("BTC".to_owned(), 8)
    } else if Some(token) == usdc {
        ("USDC".to_owned(), 6)
    } else {
        (token.to_string(), 0)
    };
    TokenLabel { currency, decimals }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn the_documents_example() {
        let q = FeeQuote::new(
            parse_amount("0.5", Currency::Eth).expect("amount"),
            700,
            Currency::Eth,
        )
        .expect("quote");
        assert_eq!(q.stake.to_string(), "0.5");
        assert_eq!(format_percentage(q.fee_percentage), "7.0");
        assert_eq!(q.fee.to_string(), "0.035");
        assert_eq!(q.total.to_string(), "0.535");
        let q = FeeQuote::new(d("0.1"), 700, Currency::Eth).expect("quote");
        assert_eq!(
            (q.fee.to_string(), q.total.to_string()),
            ("0.007".into(), "0.107".into())
        );
    }

    #[test]
    fn fees_round_up_to_the_smallest_unit() {
        // 1 satoshi at 7% is 0.07 satoshi: the contract charges 1.
        let q = FeeQuote::new(d("0.00000001"), 700, Currency::Btc).expect("quote");
        assert_eq!(q.fee.to_string(), "0.00000001");
        assert_eq!(q.total.to_string(), "0.00000002");
        assert_eq!(q.total_base_units(), U256::from(2));
        let q = FeeQuote::new(d("1"), 725, Currency::Btc).expect("quote");
        assert_eq!(format_percentage(q.fee_percentage), "7.25");
        assert_eq!(q.fee.to_string(), "0.0725");
        let q = FeeQuote::new(d("1"), 0, Currency::Eth).expect("quote");
        assert_eq!(
            (q.fee.to_string(), format_percentage(q.fee_percentage)),
            ("0".into(), "0.0".into())
        );
    }

    #[test]
    fn amounts_are_parsed_strictly() {
        for ok in ["0.1", "1", "10.000", "0.000000000000000001", "1000000"] {
            assert!(parse_amount(ok, Currency::Eth).is_ok(), "{ok}");
        }
        for (bad, err) in [
            ("", AmountError::NotDecimal),
            ("abc", AmountError::NotDecimal),
            (".5", AmountError::NotDecimal),
            ("5.", AmountError::NotDecimal),
            ("1e-3", AmountError::NotDecimal),
            ("+1", AmountError::NotDecimal),
            (" 1", AmountError::NotDecimal),
            ("1,5", AmountError::NotDecimal),
            ("0x10", AmountError::NotDecimal),
            ("NaN", AmountError::NotDecimal),
            ("0", AmountError::NotPositive),
            ("0.000", AmountError::NotPositive),
            ("-1", AmountError::NotPositive),
            ("-0.5", AmountError::NotPositive),
            ("1000000.1", AmountError::TooLarge),
            ("99999999999999999999999999999999", AmountError::TooLarge),
        ] {
            assert_eq!(parse_amount(bad, Currency::Eth), Err(err), "{bad:?}");
        }
        assert_eq!(
            parse_amount("0.0000000000000000001", Currency::Eth),
            Err(AmountError::TooPrecise {
                decimals: 18,
                currency: "ETH"
            })
        );
        assert_eq!(
            parse_amount("0.000000001", Currency::Btc),
            Err(AmountError::TooPrecise {
                decimals: 8,
                currency: "BTC"
            })
        );
        assert!(parse_amount("0.00000001", Currency::Btc).is_ok());
        assert!(
            parse_amount("0.100000000000", Currency::Btc).is_ok(),
            "trailing zeros"
        );
        assert_eq!(
            parse_amount(&"1".repeat(41), Currency::Eth),
            Err(AmountError::NotDecimal)
        );
        assert_eq!(Currency::parse("eth"), None);
        assert_eq!(Currency::parse("BTC"), Some(Currency::Btc));
    }

    #[test]
    fn units_format_and_convert() {
        assert_eq!(
            format_units(U256::from(100_000_000_000_000_000u64), 18),
            "0.1"
        );
        assert_eq!(format_units(U256::from(2), 0), "2");
        assert_eq!(format_units(U256::from(150_000_000u64), 8), "1.5");
        assert_eq!(format_units(U256::ZERO, 8), "0");
        assert_eq!(format_units(U256::from(1), 18), "0.000000000000000001");
        assert_eq!(format_units(U256::MAX, 18).len(), 79);
        assert_eq!(
            to_base_units(d("0.1"), 18),
            U256::from(100_000_000_000_000_000u64)
        );
        assert_eq!(to_base_units(d("2.50"), 8), U256::from(250_000_000u64));
        assert_eq!(fee_for(U256::from(1), 700), U256::from(1));
        assert_eq!(fee_for(U256::from(10_000), 700), U256::from(700));
        assert_eq!(fee_for(U256::from(10_001), 700), U256::from(701));
    }

    #[test]
    fn tokens_are_labelled() {
        let cbbtc = Address::repeat_byte(2);
        let usdc = Address::repeat_byte(3);
        assert_eq!(
            label(Address::ZERO, Some(cbbtc), Some(usdc)).currency,
            "ETH"
        );
        assert_eq!(label(cbbtc, Some(cbbtc), Some(usdc)).decimals, 8);
        assert_eq!(label(usdc, Some(cbbtc), Some(usdc)).currency, "USDC");
        let other = label(Address::repeat_byte(9), Some(cbbtc), Some(usdc));
        assert_eq!(
            (other.currency, other.decimals),
            (Address::repeat_byte(9).to_string(), 0)
        );
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop_oneof![Just(Currency::Eth), Just(Currency::Btc)]
    }

    proptest! {
        /// The decimal quote equals the contract's integer `feeFor` for every
        /// stake the API accepts, and the strings round-trip.
        #[test]
        fn quote_matches_the_contract(
            units in 1u64..=MAX_STAKE_UNITS,
            frac in any::<u64>(),
            bps in 0u16..=10_000,
            currency in currency(),
        ) {
            let decimals = currency.decimals();
            let frac_max = 10u64.pow(decimals.min(18)) as u128;
            let frac = (u128::from(frac) % frac_max) as u64;
            let text = if units == MAX_STAKE_UNITS || frac == 0 {
                units.to_string()
            } else {
                format!("{}.{:0width$}", units - 1, frac, width = decimals as usize)
            };
            let stake = parse_amount(&text, currency).expect("valid amount");
            let q = FeeQuote::new(stake, bps, currency).expect("quote");
            let base = to_base_units(stake, decimals);
            let fee = fee_for(base, bps);
            prop_assert_eq!(to_base_units(q.fee, decimals), fee);
            prop_assert_eq!(q.total_base_units(), base + fee);
            prop_assert_eq!(format_units(base, decimals), q.stake.to_string());
            prop_assert_eq!(format_units(base + fee, decimals), q.total.to_string());
            prop_assert_eq!(decimal(&q.total.to_string()), Some(q.total));
        }
    }
}
