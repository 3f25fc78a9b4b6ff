//! Local verification of an `exact` payment: the EIP-712 digest of the
//! EIP-3009 authorization over the token's real domain, the signer, and every
//! check that needs no chain (requirements, recipient, amount, validity
//! window). The chain checks (nonce unused, balance, contract wallets) follow
//! in [`super::X402`] because they need the RPC.
//!
//! Signatures are recovered by `crate::auth` (libsecp256k1, EIP-2 low-s);
//! this module only computes what was signed.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use serde_json::Value;

use super::proto::{Authorization, Payment, SCHEME_EXACT, caip2};
use crate::auth::signature::{WalletSignature, decode_hex};

sol! {
    /// EIP-3009 `transferWithAuthorization`'s signed struct.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// EIP-3009 `receiveWithAuthorization`'s signed struct (only the payee
    /// may submit it).
    #[derive(Debug)]
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// ERC-6492's suffix on signatures of not-yet-deployed smart wallets.
pub const ERC6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// Longest signature accepted (a contract wallet's may exceed 65 bytes —
/// multisig — but not unboundedly; the same bound as `crate::auth`'s).
pub const MAX_SIGNATURE_BYTES: usize = 2 * 1024;

/// Which EIP-3009 struct a route needs signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// `TransferWithAuthorization` (anyone may submit it): the standard x402 payment.
    Transfer,
    /// `ReceiveWithAuthorization` (only the payee contract may submit it):
    /// gas-free VM purchases through the marketplace.
    Receive,
}

impl Primary {
    /// The EIP-712 primary type name.
    pub fn name(self) -> &'static str {
        match self {
            Primary::Transfer => "TransferWithAuthorization",
            Primary::Receive => "ReceiveWithAuthorization",
        }
    }

    fn other(self) -> Self {
        match self {
            Primary::Transfer => Primary::Receive,
            Primary::Receive => Primary::Transfer,
        }
    }
}

/// The token's EIP-712 domain, as read from the contract at start.
#[derive(Debug, Clone)]
pub struct TokenDomain {
    /// `name()`.
    pub name: String,
    /// `version()`.
    pub version: String,
    /// The chain.
    pub chain_id: u64,
    /// The token contract (`verifyingContract`).
    pub token: Address,
    separator: B256,
}

impl TokenDomain {
    /// The domain of `token` on `chain_id` with the given name and version.
    pub fn new(name: &str, version: &str, chain_id: u64, token: Address) -> Self {
        let separator = domain(name, version, chain_id, token).separator();
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            chain_id,
            token,
            separator,
        }
    }

    /// `DOMAIN_SEPARATOR()` as the contract should report it.
    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The digest a wallet signs for `auth` as `primary`.
    pub fn digest(&self, primary: Primary, auth: &Authorization) -> B256 {
        digest_with(self.separator, primary, auth)
    }
}

fn domain(name: &str, version: &str, chain_id: u64, token: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.to_owned().into()),
        Some(version.to_owned().into()),
        Some(U256::from(chain_id)),
        Some(token),
        None,
    )
}

fn digest_with(separator: B256, primary: Primary, a: &Authorization) -> B256 {
    let struct_hash = match primary {
        Primary::Transfer => TransferWithAuthorization {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: a.valid_after,
            validBefore: a.valid_before,
            nonce: a.nonce,
        }
        .eip712_hash_struct(),
        Primary::Receive => ReceiveWithAuthorization {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: a.valid_after,
            validBefore: a.valid_before,
            nonce: a.nonce,
        }
        .eip712_hash_struct(),
    };
    let mut buf = [0u8; 66];
    buf[..2].copy_from_slice(&[0x19, 0x01]);
    buf[2..34].copy_from_slice(separator.as_slice());
    buf[34..].copy_from_slice(struct_hash.as_slice());
    keccak256(buf)
}

/// A refused payment: a machine-readable code (x402's names where it has
/// one) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// e.g. `invalid_exact_evm_payload_recipient_mismatch`.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a route charges: who must be paid how much, signed as which struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The struct that must be signed.
    pub primary: Primary,
    /// The payee (`to` of the authorization, `payTo` of the requirements).
    pub pay_to: Address,
    /// The price in base units.
    pub amount: U256,
    /// The value must be exactly the price (the marketplace passes the
    /// price as the signed value), not just at least it.
    pub exact: bool,
    /// The network name v1 clients use for this chain.
    pub v1_network: String,
}

/// How the signature was (or must still be) checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A 65-byte ECDSA signature that recovers to `from` (canonical v = 27/28).
    Ecdsa([u8; 65]),
    /// Not an ECDSA signature by `from`: valid only if `from` is a contract
    /// wallet whose EIP-1271 `isValidSignature` approves it (a chain call).
    Contract {
        /// The signature bytes as sent.
        signature: Vec<u8>,
        /// Why it is not an ECDSA signature by `from`, for the refusal if
        /// `from` turns out to have no code.
        ecdsa_failure: String,
    },
}

/// A payment that passed every local check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The payer (`authorization.from`).
    pub payer: Address,
    /// The authorization.
    pub authorization: Authorization,
    /// The signed digest.
    pub digest: B256,
    /// The signature check done, or left for the chain.
    pub signature: SignatureCheck,
}

/// Every check of `payment` against `expected` that needs no chain. `now` is
/// unix seconds; `margin` is how long before `validBefore` an authorization
/// is refused because it could expire before its settlement is mined.
pub fn check_local(
    domain: &TokenDomain,
    expected: &Expected,
    payment: &Payment,
    now: u64,
    margin: u64,
) -> Result<Checked, Refusal> {
    if payment.scheme != SCHEME_EXACT {
        return Err(Refusal::new(
            "unsupported_scheme",
            format!(
                "scheme `{}` is not accepted; this node takes `exact`",
                payment.scheme
            ),
        ));
    }
    let ours = caip2(domain.chain_id);
    let network_ok = match payment.version {
        2 => payment.network == ours,
        _ => payment.network == expected.v1_network || payment.network == ours,
    };
    if !network_ok {
        return Err(Refusal::new(
            "network_mismatch",
            format!(
                "network `{}` is not accepted here; pay on `{}`",
                payment.network,
                if payment.version == 2 {
                    ours.as_str()
                } else {
                    expected.v1_network.as_str()
                }
            ),
        ));
    }
    if let Some(accepted) = &payment.accepted {
        check_accepted(domain, expected, accepted)?;
    }
    let a = &payment.payload.authorization;
    if a.to != expected.pay_to {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_recipient_mismatch",
            format!(
                "authorization.to is {}, but this resource is paid to {}",
                a.to, expected.pay_to
            ),
        ));
    }
    if expected.exact && a.value != expected.amount {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_value",
            format!(
                "authorization.value {} must be exactly the price {} (USDC base units)",
                a.value, expected.amount
            ),
        ));
    }
    if a.value < expected.amount {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_value",
            format!(
                "authorization.value {} is below the price {} (USDC base units)",
                a.value, expected.amount
            ),
        ));
    }
    let now_u = U256::from(now);
    if a.valid_after > now_u {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!(
                "the authorization is not valid yet (validAfter {} is after now, {now})",
                a.valid_after
            ),
        ));
    }
    if a.valid_before <= now_u.saturating_add(U256::from(margin)) {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!(
                "the authorization has expired or expires within {margin} s (validBefore {}, now {now}); sign a new one",
                a.valid_before
            ),
        ));
    }
    let raw = decode_hex(&payment.payload.signature).map_err(|_| {
        Refusal::new(
            "invalid_exact_evm_payload_signature",
            "payload.signature is not hex",
        )
    })?;
    if raw.len() > MAX_SIGNATURE_BYTES {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_signature",
            format!(
                "payload.signature is longer than {} bytes",
                MAX_SIGNATURE_BYTES
            ),
        ));
    }
    if raw.len() >= 32 && raw[raw.len() - 32..] == ERC6492_MAGIC {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_undeployed_smart_wallet",
            "this is an ERC-6492 signature of a smart wallet that is not deployed yet; this node does not deploy wallets: deploy it (any transaction from it does) and sign again",
        ));
    }
    let digest = domain.digest(expected.primary, a);
    let signature = match WalletSignature::from_bytes(&raw) {
        Ok(sig) => match sig.recover_prehash(digest) {
            Ok(signer) if signer.address == a.from => SignatureCheck::Ecdsa(sig.to_bytes()),
            _ => SignatureCheck::Contract {
                signature: raw,
                ecdsa_failure: diagnose(domain, expected.primary, payment, &sig),
            },
        },
        Err(e) => SignatureCheck::Contract {
            signature: raw,
            ecdsa_failure: format!("payload.signature is not a valid ECDSA signature: {e}"),
        },
    };
    Ok(Checked {
        payer: a.from,
        authorization: a.clone(),
        digest,
        signature,
    })
}

fn check_accepted(
    domain: &TokenDomain,
    expected: &Expected,
    accepted: &super::proto::Requirements,
) -> Result<(), Refusal> {
    let mismatch = |what: &str| {
        Refusal::new(
            "accepted_requirements_mismatch",
            format!(
                "`accepted` does not match what this resource asks for: {what}; use an entry of the 402 answer's `accepts` as it is"
            ),
        )
    };
    if !same_address(&accepted.asset, domain.token) {
        return Err(mismatch(&format!(
            "asset {} is not {}",
            accepted.asset, domain.token
        )));
    }
    if !same_address(&accepted.pay_to, expected.pay_to) {
        return Err(mismatch(&format!(
            "payTo {} is not {}",
            accepted.pay_to, expected.pay_to
        )));
    }
    if U256::from_str_radix(accepted.amount.trim(), 10).ok() != Some(expected.amount) {
        return Err(mismatch(&format!(
            "amount {} is not {}",
            accepted.amount, expected.amount
        )));
    }
    for (field, ours) in [("name", &domain.name), ("version", &domain.version)] {
        if let Some(theirs) = accepted.extra.get(field).and_then(Value::as_str)
            && theirs != ours.as_str()
        {
            return Err(Refusal::new(
                "invalid_exact_evm_token_domain_mismatch",
                format!(
                    "extra.{field} is `{theirs}`, but the token's EIP-712 domain {field} is `{ours}` (read from the contract)"
                ),
            ));
        }
    }
    Ok(())
}

fn same_address(text: &str, address: Address) -> bool {
    text.trim().parse::<Address>().ok() == Some(address)
}

/// Why an ECDSA signature did not recover to `from`, as precisely as can be
/// told: the other EIP-3009 struct, the domain the client named, or neither.
fn diagnose(
    domain: &TokenDomain,
    primary: Primary,
    payment: &Payment,
    sig: &WalletSignature,
) -> String {
    let a = &payment.payload.authorization;
    let recovers = |digest: B256| {
        sig.recover_prehash(digest)
            .is_ok_and(|s| s.address == a.from)
    };
    if recovers(domain.digest(primary.other(), a)) {
        return format!(
            "the signature is over {} but this resource needs {} (see accepts[].extra.primaryType)",
            primary.other().name(),
            primary.name()
        );
    }
    if let Some(extra) = payment.accepted.as_ref().map(|r| &r.extra) {
        let name = extra.get("name").and_then(Value::as_str);
        let version = extra.get("version").and_then(Value::as_str);
        if let (Some(n), Some(v)) = (name, version)
            && (n != domain.name || v != domain.version)
        {
            let theirs = TokenDomain::new(n, v, domain.chain_id, domain.token);
            if recovers(theirs.digest(primary, a)) {
                return format!(
                    "the signature is over the EIP-712 domain name `{n}` version `{v}`, but the token's domain is name `{}` version `{}`",
                    domain.name, domain.version
                );
            }
        }
    }
    format!(
        "the signature does not recover to authorization.from ({}) for {} over the token's EIP-712 domain (name `{}`, version `{}`, chainId {}, verifyingContract {}): signed by another key or over another domain",
        a.from,
        primary.name(),
        domain.name,
        domain.version,
        domain.chain_id,
        domain.token
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::proto::{ExactPayload, Requirements};
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    fn token() -> Address {
        Address::repeat_byte(0x11)
    }

    fn domain() -> TokenDomain {
        TokenDomain::new("USD Coin", "2", 31337, token())
    }

    fn expected() -> Expected {
        Expected {
            primary: Primary::Transfer,
            pay_to: Address::repeat_byte(0x22),
            amount: U256::from(10_000),
            exact: false,
            v1_network: caip2(31337),
        }
    }

    fn signed(signer: &PrivateKeySigner, d: &TokenDomain, p: Primary, a: &Authorization) -> String {
        let sig = signer.sign_hash_sync(&d.digest(p, a)).expect("sign");
        format!("0x{}", hex::encode(sig.as_bytes()))
    }

    fn payment(signer: &PrivateKeySigner, value: u64) -> Payment {
        let a = Authorization {
            from: signer.address(),
            to: expected().pay_to,
            value: U256::from(value),
            valid_after: U256::ZERO,
            valid_before: U256::from(2_000),
            nonce: B256::repeat_byte(7),
        };
        let signature = signed(signer, &domain(), Primary::Transfer, &a);
        let accepted = Requirements {
            scheme: "exact".into(),
            network: caip2(31337),
            amount: "10000".into(),
            asset: token().to_string(),
            pay_to: expected().pay_to.to_string(),
            max_timeout_seconds: 300,
            extra: serde_json::json!({"name": "USD Coin", "version": "2"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        Payment {
            version: 2,
            scheme: "exact".into(),
            network: caip2(31337),
            accepted: Some(accepted),
            payload: ExactPayload {
                signature,
                authorization: a,
            },
            raw: Value::Null,
        }
    }

    #[test]
    fn the_digest_matches_alloys_eip712_signing_hash() {
        let a = payment(&PrivateKeySigner::random(), 1)
            .payload
            .authorization;
        let full = TransferWithAuthorization {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: a.valid_after,
            validBefore: a.valid_before,
            nonce: a.nonce,
        }
        .eip712_signing_hash(&super::domain("USD Coin", "2", 31337, token()));
        assert_eq!(domain().digest(Primary::Transfer, &a), full);
        assert_ne!(domain().digest(Primary::Receive, &a), full);
    }

    #[test]
    fn a_good_payment_passes_and_each_flaw_has_its_reason() {
        let signer = PrivateKeySigner::random();
        let ok = payment(&signer, 10_000);
        let c = check_local(&domain(), &expected(), &ok, 1_000, 5).expect("valid");
        assert_eq!(c.payer, signer.address());
        assert!(matches!(c.signature, SignatureCheck::Ecdsa(_)));

        let code = |p: &Payment, now: u64| {
            check_local(&domain(), &expected(), p, now, 5)
                .expect_err("refused")
                .code
        };
        let mut under = payment(&signer, 9_999);
        assert_eq!(
            code(&under, 1_000),
            "invalid_exact_evm_payload_authorization_value"
        );
        under.payload.authorization.value = U256::from(10_000);
        assert_eq!(
            code(&ok, 1_996),
            "invalid_exact_evm_payload_authorization_valid_before",
            "expires within the margin"
        );
        let mut early = payment(&signer, 10_000);
        early.payload.authorization.valid_after = U256::from(1_001);
        assert_eq!(
            code(&early, 1_000),
            "invalid_exact_evm_payload_authorization_valid_after"
        );
        let mut elsewhere = payment(&signer, 10_000);
        elsewhere.payload.authorization.to = Address::repeat_byte(0x33);
        assert_eq!(
            code(&elsewhere, 1_000),
            "invalid_exact_evm_payload_recipient_mismatch"
        );
        let mut wrong_net = payment(&signer, 10_000);
        wrong_net.network = caip2(8453);
        assert_eq!(code(&wrong_net, 1_000), "network_mismatch");
        let mut wrong_asset = payment(&signer, 10_000);
        if let Some(acc) = wrong_asset.accepted.as_mut() {
            acc.asset = Address::repeat_byte(9).to_string();
        }
        assert_eq!(code(&wrong_asset, 1_000), "accepted_requirements_mismatch");
        let mut six = payment(&signer, 10_000);
        six.payload.signature = format!("0x{}{}", "ab".repeat(100), hex::encode(ERC6492_MAGIC));
        assert_eq!(
            code(&six, 1_000),
            "invalid_exact_evm_payload_undeployed_smart_wallet"
        );
    }

    #[test]
    fn a_foreign_signature_is_left_for_eip1271_with_a_precise_reason() {
        let signer = PrivateKeySigner::random();
        // Signed over another domain (Base Sepolia's token name).
        let mut p = payment(&signer, 10_000);
        let other = TokenDomain::new("USDC", "2", 31337, token());
        p.payload.signature = signed(&signer, &other, Primary::Transfer, &p.payload.authorization);
        if let Some(acc) = p.accepted.as_mut() {
            acc.extra.insert("name".into(), "USDC".into());
        }
        let refused = check_local(&domain(), &expected(), &p, 1_000, 5).expect_err("domain");
        assert_eq!(refused.code, "invalid_exact_evm_token_domain_mismatch");
        // Same, but the client kept our extra: left for EIP-1271, diagnosed.
        if let Some(acc) = p.accepted.as_mut() {
            acc.extra.insert("name".into(), "USD Coin".into());
        }
        let c = check_local(&domain(), &expected(), &p, 1_000, 5).expect("local pass");
        let SignatureCheck::Contract { ecdsa_failure, .. } = c.signature else {
            panic!("not ECDSA by from");
        };
        assert!(ecdsa_failure.contains("another domain"), "{ecdsa_failure}");
        // The wrong struct is named as such.
        let mut q = payment(&signer, 10_000);
        q.payload.signature = signed(
            &signer,
            &domain(),
            Primary::Receive,
            &q.payload.authorization,
        );
        let c = check_local(&domain(), &expected(), &q, 1_000, 5).expect("local pass");
        let SignatureCheck::Contract { ecdsa_failure, .. } = c.signature else {
            panic!("not ECDSA by from");
        };
        assert!(
            ecdsa_failure.contains("ReceiveWithAuthorization"),
            "{ecdsa_failure}"
        );
    }
}
