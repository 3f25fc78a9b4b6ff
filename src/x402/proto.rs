//! The x402 wire format, versions 2 and 1, as the official clients send and
//! read it: base64 JSON in `PAYMENT-REQUIRED` / `PAYMENT-SIGNATURE` /
//! `PAYMENT-RESPONSE` (v2), the JSON body and `X-PAYMENT` /
//! `X-PAYMENT-RESPONSE` (v1). Only the `exact` scheme with an EIP-3009
//! authorization is modelled; anything else is refused by name.
//!
//! Parsing is lenient where clients differ (numbers as strings or JSON
//! numbers, hex with or without `0x`, base64 with or without padding) and
//! strict where it matters (sizes, address and nonce shapes).

use alloy::primitives::{Address, B256, U256};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// v2: the server's requirements (402 answer).
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// v2: the client's signed payment.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// v2: the settlement result on the paid answer.
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// v1: the client's signed payment.
pub const X_PAYMENT: &str = "x-payment";
/// v1: the settlement result on the paid answer.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
/// The only scheme served.
pub const SCHEME_EXACT: &str = "exact";
/// Largest payment header accepted, in bytes (a contract-wallet signature
/// can be long, but not unboundedly).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Why a payment header could not be read (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Too large.
    #[error("the payment header is larger than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    /// Not base64.
    #[error("the payment header is not base64")]
    NotBase64,
    /// Not the JSON we expect.
    #[error("the payment header is not a valid x402 payment payload: {0}")]
    Json(String),
    /// A version we do not speak.
    #[error("x402Version {0} is not supported (this node speaks 1 and 2)")]
    Version(u64),
}

/// The CAIP-2 network id of an EVM chain (`eip155:<id>`).
pub fn caip2(chain_id: u64) -> String {
    format!("eip155:{chain_id}")
}

/// The v1 network name the official clients know for `chain_id`, if any.
pub fn v1_network_name(chain_id: u64) -> Option<&'static str> {
    Some(match chain_id {
        8453 => "base",
        84532 => "base-sepolia",
        1 => "ethereum",
        137 => "polygon",
        80002 => "polygon-amoy",
        43114 => "avalanche",
        43113 => "avalanche-fuji",
        _ => return None,
    })
}

/// One entry of `accepts` (v2 `PaymentRequirements`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// `exact`.
    pub scheme: String,
    /// `eip155:<chain id>`.
    pub network: String,
    /// Amount in the asset's base units, decimal.
    pub amount: String,
    /// The token contract.
    pub asset: String,
    /// Who is paid.
    pub pay_to: String,
    /// How long the authorization may stay valid.
    pub max_timeout_seconds: u64,
    /// `name` and `version` of the token's EIP-712 domain (and, for routes
    /// that need one, `primaryType`).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// v1 `PaymentRequirements` (the JSON body of a 402).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    /// `exact`.
    pub scheme: String,
    /// A v1 network name (`base`, `base-sepolia`) or, for chains no v1
    /// client knows, the CAIP-2 id.
    pub network: String,
    /// Amount in base units, decimal.
    pub max_amount_required: String,
    /// URL of the resource.
    pub resource: String,
    /// What is paid for.
    pub description: String,
    /// MIME type of the answer.
    pub mime_type: String,
    /// Who is paid.
    pub pay_to: String,
    /// How long the authorization may stay valid.
    pub max_timeout_seconds: u64,
    /// The token contract.
    pub asset: String,
    /// The answer's schema (unused).
    pub output_schema: Option<Value>,
    /// EIP-712 `name` and `version`.
    pub extra: Map<String, Value>,
}

/// The paid resource (v2 `ResourceInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Its URL.
    pub url: String,
    /// What it is.
    pub description: String,
    /// MIME type of the answer.
    pub mime_type: String,
}

/// The v2 402 answer, base64 JSON in `PAYMENT-REQUIRED`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// 2.
    pub x402_version: u8,
    /// Why the request was not served.
    pub error: String,
    /// What is paid for.
    pub resource: Resource,
    /// The accepted ways to pay.
    pub accepts: Vec<Requirements>,
}

/// The v1 402 answer, the JSON body (its `error` is also chainfront's
/// `{"error"}` field).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    /// 1.
    pub x402_version: u8,
    /// Why the request was not served.
    pub error: String,
    /// The accepted ways to pay.
    pub accepts: Vec<RequirementsV1>,
}

/// An EIP-3009 authorization as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// The payer.
    #[serde(deserialize_with = "address")]
    pub from: Address,
    /// The payee.
    #[serde(deserialize_with = "address")]
    pub to: Address,
    /// Base units.
    #[serde(deserialize_with = "uint")]
    pub value: U256,
    /// Not valid at or before this unix time.
    #[serde(deserialize_with = "uint")]
    pub valid_after: U256,
    /// Not valid at or after this unix time.
    #[serde(deserialize_with = "uint")]
    pub valid_before: U256,
    /// 32 random bytes chosen by the payer.
    #[serde(deserialize_with = "nonce")]
    pub nonce: B256,
}

/// The `exact` scheme's EVM payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ExactPayload {
    /// Hex signature (65 bytes for an EOA; longer for contract wallets).
    pub signature: String,
    /// What was signed.
    pub authorization: Authorization,
}

/// A decoded payment header of either version.
#[derive(Debug, Clone)]
pub struct Payment {
    /// 1 or 2.
    pub version: u8,
    /// The scheme named by the client.
    pub scheme: String,
    /// The network named by the client.
    pub network: String,
    /// v2: the requirements the client accepted.
    pub accepted: Option<Requirements>,
    /// The signed authorization.
    pub payload: ExactPayload,
    /// The raw JSON (forwarded as-is to an external facilitator).
    pub raw: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireV2 {
    accepted: Requirements,
    payload: ExactPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireV1 {
    scheme: String,
    network: String,
    payload: ExactPayload,
}

/// Decodes a `PAYMENT-SIGNATURE` or `X-PAYMENT` header (base64 JSON).
pub fn decode_payment(header: &[u8]) -> Result<Payment, ProtoError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(ProtoError::TooLarge);
    }
    let raw: Value = serde_json::from_slice(&b64_decode(header)?)
        .map_err(|e| ProtoError::Json(e.to_string()))?;
    let version = raw
        .get("x402Version")
        .and_then(Value::as_u64)
        .ok_or_else(|| ProtoError::Json("missing x402Version".into()))?;
    let json = |e: serde_json::Error| ProtoError::Json(e.to_string());
    match version {
        2 => {
            let w: WireV2 = serde_json::from_value(raw.clone()).map_err(json)?;
            Ok(Payment {
                version: 2,
                scheme: w.accepted.scheme.clone(),
                network: w.accepted.network.clone(),
                accepted: Some(w.accepted),
                payload: w.payload,
                raw,
            })
        }
        1 => {
            let w: WireV1 = serde_json::from_value(raw.clone()).map_err(json)?;
            Ok(Payment {
                version: 1,
                scheme: w.scheme,
                network: w.network,
                accepted: None,
                payload: w.payload,
                raw,
            })
        }
        other => Err(ProtoError::Version(other)),
    }
}

/// The settlement result (`PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the transfer happened.
    pub success: bool,
    /// Machine-readable reason when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The transaction hash (empty when there is none).
    pub transaction: String,
    /// The network it happened on (as the client named it).
    pub network: String,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// Standard base64 of `value`'s JSON (what every x402 header carries).
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serialising our own plain structs cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json)
}

fn b64_decode(data: &[u8]) -> Result<Vec<u8>, ProtoError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let trimmed = data.trim_ascii();
    STANDARD
        .decode(trimmed)
        .or_else(|_| {
            let unpadded: Vec<u8> = trimmed.iter().copied().filter(|b| *b != b'=').collect();
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(&unpadded)
                .or_else(|_| URL_SAFE_NO_PAD.decode(&unpadded))
        })
        .map_err(|_| ProtoError::NotBase64)
}

/// Decodes a base64 JSON header into `T` (for clients and tests).
pub fn decode_header<T: serde::de::DeserializeOwned>(data: &[u8]) -> Result<T, ProtoError> {
    serde_json::from_slice(&b64_decode(data)?).map_err(|e| ProtoError::Json(e.to_string()))
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let s = String::deserialize(d)?;
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(&s);
    if hex.len() != 40 {
        return Err(serde::de::Error::custom(format!(
            "`{s}` is not a 20-byte address"
        )));
    }
    hex.parse::<Address>()
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a 20-byte address")))
}

fn nonce<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
    let s = String::deserialize(d)?;
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(&s);
    if hex.len() != 64 {
        return Err(serde::de::Error::custom("nonce must be 32 bytes of hex"));
    }
    hex.parse::<B256>()
        .map_err(|_| serde::de::Error::custom("nonce must be 32 bytes of hex"))
}

/// A uint256 sent as a decimal string, a `0x` hex string or a JSON number.
fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| serde::de::Error::custom("amounts and times must be unsigned integers")),
        Value::String(s) if s.len() <= 80 => {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => U256::from_str_radix(hex, 16),
                None => U256::from_str_radix(&s, 10),
            };
            parsed
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an unsigned integer")))
        }
        _ => Err(serde::de::Error::custom(
            "amounts and times must be unsigned integers",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(v.to_string())
            .into_bytes()
    }

    fn authorization() -> Value {
        json!({
            "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
            "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "value": "10000",
            "validAfter": "0",
            "validBefore": 1740672154u64,
            "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
        })
    }

    #[test]
    fn decodes_the_spec_examples_of_both_versions() {
        let v2 = json!({
            "x402Version": 2,
            "resource": {"url": "https://api.example.com/premium-data", "description": "d", "mimeType": "application/json"},
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
                "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
                "extra": {"name": "USDC", "version": "2"}},
            "payload": {"signature": "0x2d", "authorization": authorization()}
        });
        let p = decode_payment(&b64(&v2)).expect("v2");
        assert_eq!(p.version, 2);
        assert_eq!(p.network, "eip155:84532");
        assert_eq!(p.payload.authorization.value, U256::from(10_000));
        assert_eq!(
            p.payload.authorization.valid_before,
            U256::from(1_740_672_154u64)
        );
        let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"signature": "2d", "authorization": authorization()}});
        let p = decode_payment(&b64(&v1)).expect("v1");
        assert_eq!((p.version, p.network.as_str()), (1, "base-sepolia"));
        assert!(p.accepted.is_none());
        // Unpadded and URL-safe base64 are read too.
        let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v1.to_string());
        assert!(decode_payment(unpadded.as_bytes()).is_ok());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        assert_eq!(
            decode_payment(b"%%%").expect_err("not base64"),
            ProtoError::NotBase64
        );
        assert!(matches!(
            decode_payment(&b64(&json!({"x402Version": 3}))),
            Err(ProtoError::Version(3))
        ));
        assert!(matches!(
            decode_payment(&b64(&json!({"x402Version": 1, "scheme": "exact"}))),
            Err(ProtoError::Json(_))
        ));
        let mut bad = authorization();
        bad["from"] = json!("0x1234");
        let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "base",
            "payload": {"signature": "2d", "authorization": bad}});
        assert!(matches!(
            decode_payment(&b64(&v1)),
            Err(ProtoError::Json(_))
        ));
        let mut neg = authorization();
        neg["value"] = json!(-1);
        let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "base",
            "payload": {"signature": "2d", "authorization": neg}});
        assert!(matches!(
            decode_payment(&b64(&v1)),
            Err(ProtoError::Json(_))
        ));
        assert_eq!(
            decode_payment(&vec![b'A'; MAX_HEADER_BYTES + 1]).expect_err("too large"),
            ProtoError::TooLarge
        );
    }

    #[test]
    fn settle_response_round_trips_through_a_header() {
        let r = SettleResponse {
            success: true,
            error_reason: None,
            transaction: "0xab".into(),
            network: caip2(31337),
            payer: Some("0x01".into()),
        };
        let back: SettleResponse = decode_header(encode_header(&r).as_bytes()).expect("decodes");
        assert_eq!(back, r);
        assert_eq!(v1_network_name(84532), Some("base-sepolia"));
        assert_eq!(v1_network_name(31337), None);
    }
}
