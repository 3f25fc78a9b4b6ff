//! Prices per service: the Clodds document's table by default, any field
//! overridable in `[compute.pricing.<service>]`. A job costs
//! `basePrice + units × pricePerUnit`, rounded up to a base unit and clamped
//! to `[minCharge, maxCharge]`.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

use crate::compute::config::PriceOverride;
use crate::ledger::Usd;

/// A decimal written as an exact JSON number in its shortest form (`0.000003`, `10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num(pub Decimal);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.normalize().to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// One service's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Service name.
    pub service: String,
    /// Charged once per job.
    pub base_price: Num,
    /// What a unit is.
    pub unit: String,
    /// Price of one unit.
    pub price_per_unit: Num,
    /// Smallest charge.
    pub min_charge: Num,
    /// Largest charge.
    pub max_charge: Num,
}

impl Price {
    fn usd(d: Decimal) -> Usd {
        Usd::from_decimal_ceil(d).unwrap_or(Usd(crate::ledger::MAX_UNITS))
    }

    /// The smallest charge.
    pub fn min(&self) -> Usd {
        Self::usd(self.min_charge.0)
    }

    /// The largest charge.
    pub fn max(&self) -> Usd {
        Self::usd(self.max_charge.0).max(self.min())
    }

    /// `(base, usage, total)` for `units`: total = ceil(base + units × price), clamped.
    pub fn breakdown(&self, units: Decimal) -> (Decimal, Decimal, Usd) {
        let usage = units
            .checked_mul(self.price_per_unit.0)
            .unwrap_or(Decimal::MAX);
        let raw = self.base_price.0.checked_add(usage).unwrap_or(Decimal::MAX);
        let total = Self::usd(raw).max(self.min()).min(self.max());
        (self.base_price.0, usage, total)
    }

    /// The charge for `units`.
    pub fn cost(&self, units: Decimal) -> Usd {
        self.breakdown(units).2
    }
}

/// Every service's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pricing(pub BTreeMap<String, Price>);

/// The document's table: service, basePrice, unit, pricePerUnit, minCharge, maxCharge.
const DEFAULTS: [(&str, &str, &str, &str, &str, &str); 8] = [
    ("llm", "0", "token", "0.000003", "0.001", "10"),
    ("code", "0.01", "second", "0.001", "0.01", "1"),
    ("web", "0.005", "request", "0.005", "0.005", "0.1"),
    ("trade", "0.01", "call", "0.01", "0.01", "0.5"),
    ("data", "0.001", "request", "0.001", "0.001", "0.1"),
    ("storage", "0", "mb", "0.0001", "0.001", "1"),
    ("gpu", "0", "second", "0.01", "0.1", "100"),
    ("ml", "0.01", "request", "0.01", "0.01", "1"),
];

impl Pricing {
    /// The defaults with `overrides` applied (unknown services are added).
    pub fn new(overrides: &BTreeMap<String, PriceOverride>) -> Self {
        let d = |s: &str| Num(Decimal::from_str(s).unwrap_or_default());
        let mut map: BTreeMap<String, Price> = DEFAULTS
            .iter()
            .map(|(svc, base, unit, ppu, min, max)| {
                (
                    (*svc).to_owned(),
                    Price {
                        service: (*svc).to_owned(),
                        base_price: d(base),
                        unit: (*unit).to_owned(),
                        price_per_unit: d(ppu),
                        min_charge: d(min),
                        max_charge: d(max),
                    },
                )
            })
            .collect();
        for (svc, o) in overrides {
            let p = map.entry(svc.clone()).or_insert_with(|| Price {
                service: svc.clone(),
                base_price: Num(Decimal::ZERO),
                unit: "call".into(),
                price_per_unit: Num(Decimal::ZERO),
                min_charge: Num(Decimal::ZERO),
                max_charge: Num(Decimal::ZERO),
            });
            if let Some(v) = o.base_price {
                p.base_price = Num(v);
            }
            if let Some(v) = &o.unit {
                p.unit = v.clone();
            }
            if let Some(v) = o.price_per_unit {
                p.price_per_unit = Num(v);
            }
            if let Some(v) = o.min_charge {
                p.min_charge = Num(v);
            }
            if let Some(v) = o.max_charge {
                p.max_charge = Num(v);
            }
        }
        Self(map)
    }

    /// One service's price.
    pub fn get(&self, service: &str) -> Option<&Price> {
        self.0.get(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_document_and_serialize_exactly() {
        let p = Pricing::new(&BTreeMap::new());
        let json = serde_json::to_string(&p.0["llm"]).expect("json");
        assert_eq!(
            json,
            r#"{"service":"llm","basePrice":0,"unit":"token","pricePerUnit":0.000003,"minCharge":0.001,"maxCharge":10}"#
        );
        let web = &p.0["web"];
        assert_eq!(web.cost(Decimal::ONE), Usd(10_000));
        // 1500 tokens: 0.0045, as in the document's example.
        assert_eq!(p.0["llm"].cost(Decimal::from(1_500)), Usd(4_500));
        // Clamped up to the minimum and down to the maximum.
        assert_eq!(p.0["llm"].cost(Decimal::ONE), Usd(1_000));
        assert_eq!(p.0["llm"].cost(Decimal::from(100_000_000)), Usd(10_000_000));
        // 0.5 MB of storage is 0.00005, below the 0.001 minimum.
        assert_eq!(
            p.0["storage"].cost(Decimal::from_str("0.5").expect("d")),
            Usd(1_000)
        );
    }

    #[test]
    fn overrides_replace_fields() {
        let mut o = BTreeMap::new();
        o.insert(
            "web".to_owned(),
            PriceOverride {
                base_price: Some(Decimal::from_str("0.02").expect("d")),
                ..PriceOverride::default()
            },
        );
        let p = Pricing::new(&o);
        assert_eq!(
            p.0["web"].base_price.0,
            Decimal::from_str("0.02").expect("d")
        );
        assert_eq!(p.0["web"].unit, "request");
    }
}
